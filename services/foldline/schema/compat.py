"""Whether the code's wire schema can still read what the recorded one wrote. Pure.

The rule is the codec's: a field's new type must accept every value its old type accepted, and a record
may carry no field the type no longer declares (the decoder refuses unknown fields) and must carry every
required one. So for a type at the same schema version:

- a removed (or renamed) field, a changed type, a new required field, a field that became required, or a
  ``one_of`` that lost a value is incompatible;
- a new field with a default, a field that became optional, ``X`` to ``X | None``, ``integer`` to
  ``number`` or ``decimal``, a ``one_of`` that gained values, a new type, is compatible.

Events and states live forever, so one that changed incompatibly needs a new ``__schema_version__``; and
every event and state type at version ``n > 1`` needs an upcaster from each version ``1 .. n-1``.
Commands are held to the field rule even at a new version: the gateway checks an HTTP client's payload
against the deployed class (clients name no version), so only a compatible change keeps them working;
a command whose version moved needs command upcasters from the recorded version on (for commands sent at
that version and not handled yet). A breaking change to a command is a new command type.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

_WIDER = {("integer", "number"), ("integer", "decimal")}


@dataclass(frozen=True)
class SchemaProblem:
    """One incompatible change: ``where`` names the aggregate or policy and the type, ``message`` the field."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class Comparison:
    """What ``compare_schemas`` found: incompatible ``problems``, and compatible ``changes`` not yet recorded."""

    problems: list[SchemaProblem] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def show(wire: Any) -> str:
    """A wire type for a person: ``optional<array<object LineItem>>``."""
    if isinstance(wire, str):
        return wire
    if not isinstance(wire, dict) or not wire:
        return repr(wire)
    if "object" in wire:
        return f"object {wire['object']}"
    if "one_of" in wire:
        return "one_of[" + ", ".join(json.dumps(v) for v in wire["one_of"]) + "]"
    kind = next(iter(wire))
    return f"{kind}<{show(wire[kind])}>"


def _fits(value: Any, scalar: str) -> bool:
    """Whether a ``one_of`` value is accepted by a scalar type, so that ``one_of`` -> scalar is a widening."""
    if scalar == "string":
        return isinstance(value, str)
    if scalar == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if scalar == "integer":
        return isinstance(value, int)
    if scalar == "number":
        return isinstance(value, (int, float))
    if scalar == "decimal":
        if isinstance(value, int):
            return True
        try:
            return isinstance(value, str) and Decimal(value).is_finite()
        except InvalidOperation:
            return False
    return False


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)  # 1 and true are different values on the wire


def accepts(old: Any, new: Any, path: str) -> Iterator[tuple[str, str]]:
    """``(field path, what broke)`` for each way ``new`` refuses a value ``old`` accepted."""
    if new == "any" or old == new:
        return
    if isinstance(new, dict) and "optional" in new:
        inner = old["optional"] if isinstance(old, dict) and "optional" in old else old
        yield from accepts(inner, new["optional"], path)
        return
    if isinstance(old, dict) and "optional" in old:
        yield path, f"no longer accepts null (type changed from {show(old)} to {show(new)})"
        return
    if isinstance(old, str) and isinstance(new, str) and (old, new) in _WIDER:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for kind, suffix in (("array", "[]"), ("map", "{}")):
            if kind in old and kind in new:
                yield from accepts(old[kind], new[kind], path + suffix)
                return
        if "one_of" in old and "one_of" in new:
            kept = {_key(v) for v in new["one_of"]}
            lost = [v for v in old["one_of"] if _key(v) not in kept]
            if lost:
                yield path, "no longer accepts " + ", ".join(json.dumps(v) for v in lost)
            return
        if "object" in old and "object" in new:
            if "fields" in old and "fields" in new:
                yield from compare_fields(old["fields"], new["fields"], path + ".")
                return
            if old.get("recursive") and new.get("recursive") and old["object"] == new["object"]:
                return
    if isinstance(old, dict) and "one_of" in old and isinstance(new, str) and all(_fits(v, new) for v in old["one_of"]):
        return
    yield path, f"type changed from {show(old)} to {show(new)}"


def compare_fields(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(field path, what broke)`` for each field change that a record or a client of ``old`` would fail."""
    for name in sorted(old):
        path = prefix + name
        if name not in new:
            yield path, "removed or renamed (records and clients that carry it would be refused as an unknown field)"
            continue
        if new[name]["required"] and not old[name]["required"]:
            yield path, "became required (records and clients that leave it out would be refused)"
        yield from accepts(old[name]["type"], new[name]["type"], path)
    for name in sorted(set(new) - set(old)):
        if new[name]["required"]:
            yield prefix + name, "is new and required, without a default (older records and clients lack it)"


_EVENT_ADVICE = "without a new __schema_version__ (an incompatible change needs one, and upcasters to it)"
_COMMAND_ADVICE = (
    "clients send the old shape, and the gateway checks it against the deployed class whatever its version: "
    "keep the change compatible, or add a new command type"
)


def _compare_types(
    out: Comparison, where: str, what: str, old: Mapping[str, Any], new: Mapping[str, Any], command: bool
) -> None:
    for name in sorted(old):
        label = f"{where} {what} {name}"
        if name not in new:
            reason = (
                "clients that send it would be refused" if command else "its recorded events could no longer be read"
            )
            out.problems.append(SchemaProblem(label, f"the type was removed or renamed: {reason}"))
            continue
        _compare_type(out, label, old[name], new[name], command)
    out.changes.extend(f"{where}: new {what} type {name}" for name in sorted(set(new) - set(old)))


def _compare_type(out: Comparison, label: str, old: Mapping[str, Any], new: Mapping[str, Any], command: bool) -> None:
    before, after = old["version"], new["version"]
    if after < before:
        out.problems.append(SchemaProblem(label, f"schema version went down from {before} to {after}"))
        return
    if after > before:
        out.changes.append(f"{label}: schema version {before} -> {after}")
        if not command:
            return  # the upcasters bring older records to the new version (their chain is checked apart)
        for version in range(before, after):
            if version not in new["upcasters_from"]:
                out.problems.append(
                    SchemaProblem(
                        label,
                        f"schema version {before} -> {after} without a command upcaster from version {version}: "
                        f"commands sent at version {version} would fail as unsupported_version",
                    )
                )
    for path, message in compare_fields(old["fields"], new["fields"]):
        advice = _COMMAND_ADVICE if command else _EVENT_ADVICE
        out.problems.append(SchemaProblem(label, f"field {path}: {message}; {advice}"))
    if after == before and old["fields"] != new["fields"]:
        out.changes.append(f"{label}: compatible field changes")


def _check_chain(out: Comparison, label: str, entry: Mapping[str, Any], registry: str) -> None:
    """Every event and state type at version n > 1 needs an upcaster from each older version."""
    for version in range(1, entry["version"]):
        if version not in entry["upcasters_from"]:
            out.problems.append(
                SchemaProblem(
                    label,
                    f"schema version {entry['version']} has no upcaster from version {version} ({registry}): "
                    f"records written at version {version} could no longer be read",
                )
            )


def compare_schemas(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> Comparison:
    """Compare the code's schema document (``schema_of``) with the recorded one (the committed file)."""
    out = Comparison()
    old_aggs, new_aggs = recorded["aggregates"], current["aggregates"]
    for name in sorted(old_aggs):
        if name not in new_aggs:
            out.problems.append(
                SchemaProblem(f"aggregate {name}", "is in the schema file but not in the code: its events live forever")
            )
            continue
        old, new = old_aggs[name], new_aggs[name]
        _compare_types(out, name, "command", old["commands"], new["commands"], command=True)
        _compare_types(out, name, "event", old["events"], new["events"], command=False)
        _compare_type(out, f"{name} state", old["state"], new["state"], command=False)
    out.changes.extend(f"new aggregate {name}" for name in sorted(set(new_aggs) - set(old_aggs)))
    for name in sorted(new_aggs):
        for event, entry in sorted(new_aggs[name]["events"].items()):
            _check_chain(out, f"{name} event {event}", entry, f"Aggregate.upcasters[({event!r}, n)]")
        _check_chain(out, f"{name} state", new_aggs[name]["state"], "Aggregate.upcasters[(STATE, n)]")

    old_pols, new_pols = recorded["policies"], current["policies"]
    for name in sorted(old_pols):
        if name not in new_pols:
            out.problems.append(SchemaProblem(f"policy {name}", "is in the schema file but not in the code"))
            continue
        old_state, new_state = old_pols[name]["state"], new_pols[name]["state"]
        if old_state is not None and new_state is not None:
            _compare_type(out, f"policy {name} state", old_state, new_state, command=False)
        elif old_state != new_state:
            out.changes.append(f"policy {name}: state {'added' if new_state else 'dropped'}")
    out.changes.extend(f"new policy {name}" for name in sorted(set(new_pols) - set(old_pols)))
    for name in sorted(new_pols):
        if new_pols[name]["state"] is not None:
            _check_chain(out, f"policy {name} state", new_pols[name]["state"], "Policy.upcasters[(STATE, n)]")
    return out
