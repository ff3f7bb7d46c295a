"""The committed schema file: read it (checking its shape), write it, and check the code against it.

The file records, for each aggregate and policy, the import path it was dumped from, so that
``foldline schema check`` and ``assert_schema_compatible`` need nothing but the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from foldline.aggregate import Aggregate, AggregateSpec, load_aggregate
from foldline.errors import AggregateDefinitionError, ConfigurationError, FoldlineError
from foldline.policies import Policy, PolicySpec, load_policy
from foldline.schema.compat import Comparison, compare_schemas
from foldline.schema.samples import probe_upcasters
from foldline.schema.wire import FORMAT, SCALAR_NAMES, render, schema_of

#: What ``foldline schema`` reads and writes when no ``--file`` is given.
DEFAULT_FILE = "foldline-schema.json"

#: An aggregate or a policy: an import path (``package.module:Name``), a class, or an instance.
Target = str | type[Any] | Aggregate[Any] | Policy[Any]


class _Bad(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")


def _object(value: Any, where: str, keys: set[str], optional: frozenset[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(where, f"expected an object, got {type(value).__name__}")
    missing, unknown = keys - value.keys() - optional, value.keys() - keys
    if missing:
        raise _Bad(where, f"missing {', '.join(sorted(missing))}")
    if unknown:
        raise _Bad(where, f"unknown key(s) {', '.join(sorted(unknown))}")
    return value


def _check_wire(value: Any, where: str) -> None:
    if isinstance(value, str):
        if value not in SCALAR_NAMES:
            raise _Bad(where, f"unknown type {value!r}; expected one of {', '.join(sorted(SCALAR_NAMES))} or an object")
        return
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("optional", "array", "map"):
        kind = next(iter(value))
        _check_wire(value[kind], f"{where}.{kind}")
        return
    if isinstance(value, dict) and value.keys() == {"one_of"}:
        if not isinstance(value["one_of"], list):
            raise _Bad(where, "one_of must be a list of values")
        return
    if isinstance(value, dict) and "object" in value:
        if value.keys() == {"object", "recursive"} and value["recursive"] is True:
            return
        _object(value, where, {"object", "fields"})
        _check_fields(value["fields"], f"{where}.fields")
        return
    raise _Bad(where, f"not a wire type: {json.dumps(value)[:80]}")


def _check_fields(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise _Bad(where, "expected an object of fields")
    for name, spec in value.items():
        _object(spec, f"{where}.{name}", {"type", "required"})
        if not isinstance(spec["required"], bool):
            raise _Bad(f"{where}.{name}.required", "expected true or false")
        _check_wire(spec["type"], f"{where}.{name}.type")


def _check_type(value: Any, where: str) -> None:
    _object(value, where, {"version", "upcasters_from", "fields"})
    version, steps = value["version"], value["upcasters_from"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _Bad(f"{where}.version", "expected an integer >= 1")
    if not isinstance(steps, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in steps):
        raise _Bad(f"{where}.upcasters_from", "expected a list of integers")
    _check_fields(value["fields"], f"{where}.fields")


def _check_types(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise _Bad(where, "expected an object of types")
    for name, entry in value.items():
        _check_type(entry, f"{where}.{name}")


def validate(doc: Any) -> dict[str, Any]:
    """The document if it has the schema file's shape; ``ConfigurationError`` naming the first wrong place."""
    try:
        _object(doc, "the file", {"foldline_schema", "aggregates", "policies"})
        if doc["foldline_schema"] != FORMAT:
            raise _Bad("foldline_schema", f"this foldline reads format {FORMAT}, not {doc['foldline_schema']!r}")
        if not isinstance(doc["aggregates"], dict) or not isinstance(doc["policies"], dict):
            raise _Bad("the file", "aggregates and policies must be objects")
        for name, agg in doc["aggregates"].items():
            where = f"aggregates.{name}"
            _object(agg, where, {"import", "commands", "events", "state"}, frozenset({"import"}))
            _check_types(agg["commands"], f"{where}.commands")
            _check_types(agg["events"], f"{where}.events")
            _check_type(agg["state"], f"{where}.state")
        for name, pol in doc["policies"].items():
            _object(pol, f"policies.{name}", {"import", "state"}, frozenset({"import"}))
            if pol["state"] is not None:
                _check_type(pol["state"], f"policies.{name}.state")
    except _Bad as exc:
        raise ConfigurationError(f"not a foldline schema file: {exc}") from None
    return dict(doc)


def read_schema_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The recorded schema; ``ConfigurationError`` when the file is missing, unreadable or not one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"{path}: no such schema file (write it with 'foldline schema dump')") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path}: cannot read the schema file: {exc}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{path}: not JSON: {exc}") from None
    try:
        return validate(doc)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{path}: {exc}") from None


def write_schema_file(path: str | os.PathLike[str], doc: Mapping[str, Any]) -> bool:
    """Write the document (atomically); False when the file already held exactly this."""
    text = render(doc)
    target = Path(path)
    try:
        if target.exists() and target.read_text(encoding="utf-8") == text:
            return False
        fd, tmp = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, target)
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot write the schema file: {exc}") from exc
    return True


def _load(target: Target, kind: str) -> tuple[str | None, Any]:
    """(import path or None, compiled spec) of an aggregate or policy given by path, class or instance."""
    if isinstance(target, str):
        try:
            return target, (load_aggregate(target) if kind == "aggregate" else load_policy(target))
        except FoldlineError:
            raise
        except Exception as exc:  # importing a team's module ran its code: any error is a bad --aggregate
            raise AggregateDefinitionError(f"cannot load {target}: {type(exc).__name__}: {exc}") from exc
    instance = target() if isinstance(target, type) else target
    path = f"{type(instance).__module__}:{type(instance).__qualname__}"
    if kind == "aggregate" and isinstance(instance, Aggregate):
        return path, AggregateSpec(instance)
    if kind == "policy" and isinstance(instance, Policy):
        return path, PolicySpec(instance)
    raise AggregateDefinitionError(f"{target!r} is not a foldline {kind.capitalize()}")


def _load_all(
    aggregates: Sequence[Target], policies: Sequence[Target]
) -> tuple[dict[str, Any], list[AggregateSpec], list[PolicySpec]]:
    aggs = [_load(t, "aggregate") for t in aggregates]
    pols = [_load(t, "policy") for t in policies]
    doc = schema_of([spec for _, spec in aggs], [spec for _, spec in pols])
    for path, spec in aggs:
        doc["aggregates"][spec.name]["import"] = path
    for path, spec in pols:
        doc["policies"][spec.name]["import"] = path
    return doc, [spec for _, spec in aggs], [spec for _, spec in pols]


def code_schema(aggregates: Sequence[Target] = (), policies: Sequence[Target] = ()) -> dict[str, Any]:
    """The schema document of the code: the given aggregates and policies, each with its import path."""
    return _load_all(aggregates, policies)[0]


def compare_with_code(
    recorded: Mapping[str, Any], aggregates: Sequence[Target], policies: Sequence[Target]
) -> tuple[dict[str, Any], Comparison]:
    """The code's schema document, and how it compares with the recorded one: ``compare_schemas``, plus
    the upcasters run on a record of each recorded shape whose version moved (``probe_upcasters``)."""
    current, agg_specs, pol_specs = _load_all(aggregates, policies)
    comparison = compare_schemas(recorded, current)
    comparison.problems.extend(probe_upcasters(recorded, agg_specs, pol_specs))
    return current, comparison


def recorded_targets(doc: Mapping[str, Any], section: str) -> list[str]:
    """The import paths a schema file's ``aggregates`` or ``policies`` were dumped from."""
    found = []
    for name, entry in sorted(doc[section].items()):
        path = entry.get("import")
        if not isinstance(path, str) or not path:
            flag = "--aggregate" if section == "aggregates" else "--policy"
            raise ConfigurationError(f"{section}.{name} has no import path in the schema file: name it with {flag}")
        found.append(path)
    return found


def check_schema_file(
    path: str | os.PathLike[str],
    aggregates: Sequence[Target] | None = None,
    policies: Sequence[Target] | None = None,
) -> Comparison:
    """Compare the code with a schema file: the aggregates and the policies given, each (when None) the ones
    the file was dumped from."""
    recorded = read_schema_file(path)
    if aggregates is None:
        aggregates = recorded_targets(recorded, "aggregates")
    if policies is None:
        policies = recorded_targets(recorded, "policies")
    return compare_with_code(recorded, aggregates, policies)[1]
