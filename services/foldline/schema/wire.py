"""The wire schema of an aggregate's and a policy's types: what their records hold as JSON. Pure.

Derived from the same annotations the codec compiles (``foldline.codec``), so it says what a record of
each type looks like on the wire, not how the Python class is spelled: ``tuple[X, ...]``, ``list[X]`` and
``frozenset[X]`` are all an ``array``; a ``Literal`` and an ``Enum`` are both a ``one_of`` their values;
a nested dataclass is an ``object`` with its fields inline (its class name is only a label).

A wire type is JSON: a scalar name (``string``, ``integer``, ``number``, ``boolean``, ``decimal``,
``date``, ``datetime``, ``any``) or an object with one key: ``{"optional": T}``, ``{"array": T}``,
``{"map": T}`` (string keys), ``{"one_of": [values]}``, or ``{"object": "Name", "fields": {...}}``
(``{"object": "Name", "recursive": true}`` where a type refers back to one that encloses it).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

from foldline.aggregate import STATE, schema_version
from foldline.errors import AggregateDefinitionError

if TYPE_CHECKING:
    from foldline.aggregate import AggregateSpec
    from foldline.policies import PolicySpec

#: The version of the schema file's own layout.
FORMAT = 1

SCALARS: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    Decimal: "decimal",
    date: "date",
    datetime: "datetime",
}
SCALAR_NAMES = frozenset(SCALARS.values()) | {"any"}


def _json_value(value: Any) -> Any:
    """A ``Literal``'s or an ``Enum``'s value as JSON (as the codec writes it)."""
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def _one_of(values: Iterable[Any]) -> dict[str, Any]:
    found = {json.dumps(v, sort_keys=True): v for v in map(_json_value, values)}
    return {"one_of": [found[k] for k in sorted(found)]}


def wire_type(tp: Any, enclosing: tuple[type[Any], ...] = ()) -> Any:
    """The wire type of an annotation the codec accepts (see the module docstring)."""
    if tp in SCALARS:
        return SCALARS[tp]
    if tp is Any:
        return "any"
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return _one_of(args)
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) != 1 or len(args) != 2:
            raise AggregateDefinitionError(f"only Optional[X] unions are supported, not {tp!r}")
        return {"optional": wire_type(members[0], enclosing)}
    if origin in (tuple, list, frozenset) and args:
        return {"array": wire_type(args[0], enclosing)}
    if origin is dict and len(args) == 2:
        return {"map": wire_type(args[1], enclosing)}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _one_of(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if tp in enclosing:
            return {"object": tp.__name__, "recursive": True}
        return {"object": tp.__name__, "fields": fields_of(tp, enclosing)}
    raise AggregateDefinitionError(f"foldline cannot encode fields of type {tp!r}")


def fields_of(cls: type[Any], enclosing: tuple[type[Any], ...] = ()) -> dict[str, Any]:
    """``{field: {"type": wire type, "required": bool}}`` of a dataclass: the fields its records carry."""
    try:
        hints = typing.get_type_hints(cls)
    except NameError as exc:
        raise AggregateDefinitionError(f"cannot resolve the annotations of {cls.__qualname__}: {exc}") from exc
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        out[f.name] = {"type": wire_type(hints[f.name], (*enclosing, cls)), "required": not has_default}
    return out


def type_schema(cls: type[Any], upcasters_from: Iterable[int]) -> dict[str, Any]:
    """One command, event or state type: its schema version, the versions it has an upcaster from, its fields."""
    return {"version": schema_version(cls), "upcasters_from": sorted(set(upcasters_from)), "fields": fields_of(cls)}


def _steps(upcasters: Mapping[tuple[str, int], Any], name: str) -> list[int]:
    return [version for (type_, version) in upcasters if type_ == name]


def aggregate_schema(spec: AggregateSpec) -> dict[str, Any]:
    """The wire schema of every command, event and state type of an aggregate."""
    return {
        "commands": {
            name: type_schema(kind.cls, _steps(spec.command_upcasters, name)) for name, kind in spec.commands.items()
        },
        "events": {name: type_schema(kind.cls, _steps(spec.upcasters, name)) for name, kind in spec.events.items()},
        "state": type_schema(spec.state.cls, _steps(spec.upcasters, STATE)),
    }


def policy_schema(spec: PolicySpec) -> dict[str, Any]:
    """A policy's own state (None for a policy without state): the only record a policy writes itself."""
    state = None if spec.state is None else type_schema(spec.state.cls, _steps(spec.upcasters, STATE))
    return {"state": state}


def schema_of(aggregates: Sequence[AggregateSpec] = (), policies: Sequence[PolicySpec] = ()) -> dict[str, Any]:
    """The schema document of some aggregates and policies (``foldline schema`` adds each one's import path)."""
    doc: dict[str, Any] = {"foldline_schema": FORMAT, "aggregates": {}, "policies": {}}
    for spec in aggregates:
        if spec.name in doc["aggregates"]:
            raise AggregateDefinitionError(f"two aggregates are named {spec.name!r}")
        doc["aggregates"][spec.name] = aggregate_schema(spec)
    for policy in policies:
        if policy.name in doc["policies"]:
            raise AggregateDefinitionError(f"two policies are named {policy.name!r}")
        doc["policies"][policy.name] = policy_schema(policy)
    return doc


#: A field whose one-line form is at most this wide stays on one line (most do): one field, one diff line.
_LINE = 100


def _render(value: Any, indent: str) -> str:
    flat = json.dumps(value, sort_keys=True, ensure_ascii=False)
    if not isinstance(value, dict) or not value or ("required" in value and len(flat) <= _LINE):
        return flat
    inner = indent + "  "
    items = (f"{inner}{json.dumps(k, ensure_ascii=False)}: {_render(value[k], inner)}" for k in sorted(value))
    return "{\n" + ",\n".join(items) + "\n" + indent + "}"


def render(doc: Mapping[str, Any]) -> str:
    """The document as the committed file holds it: JSON, sorted keys, a field a line, a final newline."""
    return _render(doc, "") + "\n"
