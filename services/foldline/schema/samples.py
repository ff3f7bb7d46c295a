"""Run the upcasters on a record of the recorded shape: does the code's new version read what they make?

For each event and state type whose version moved past the recorded one, a sample record of the recorded
version (every field present, as the encoder writes them) goes through the aggregate's upcasters and the
new class's decoder, as a real old record would. A structural failure - a field the new version refuses as
unknown, one it misses, one of the wrong type, an upcaster that looks up a field the record does not hold
(``KeyError``) - is a problem. A failure the sample's made-up values may cause (a ``__post_init__`` rule,
an upcaster that parses a value) proves nothing and is left out. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from foldline.aggregate import AggregateSpec
from foldline.errors import AggregateDefinitionError, ValidationError
from foldline.policies import PolicySpec
from foldline.schema.compat import SchemaProblem

_SCALAR_SAMPLES: dict[str, Any] = {
    "string": "0",
    "integer": 0,
    "number": 0.5,
    "boolean": False,
    "decimal": "0",
    "date": "2000-01-01",
    "datetime": "2000-01-01T00:00:00+00:00",
    "any": "0",
}


def _recursive(wire: Any) -> bool:
    return isinstance(wire, dict) and bool(wire.get("recursive"))


def sample(wire: Any) -> Any:
    """A value of a wire type, as the encoder would write one."""
    if isinstance(wire, str):
        return _SCALAR_SAMPLES[wire]
    if "optional" in wire:
        return None if _recursive(wire["optional"]) else sample(wire["optional"])
    if "array" in wire:
        return [] if _recursive(wire["array"]) else [sample(wire["array"])]
    if "map" in wire:
        return {} if _recursive(wire["map"]) else {"k": sample(wire["map"])}
    if "one_of" in wire:
        return wire["one_of"][0] if wire["one_of"] else None
    return {name: sample(spec["type"]) for name, spec in wire.get("fields", {}).items()}


def _probe(label: str, old: Mapping[str, Any], new_version: int, decode: Callable[[Any], Any]) -> SchemaProblem | None:
    before = old["version"]
    if new_version <= before:
        return None
    payload = sample({"fields": old["fields"]})
    try:
        decode(payload)
    except AggregateDefinitionError:
        return None  # a missing upcaster: compare_schemas reports it
    except ValidationError as exc:
        invalid = exc.__context__  # the codec's own failure; its cause is the class's error, if it raised one
        if invalid is not None and isinstance(invalid.__cause__, (ValueError, TypeError)):
            return None  # the class's own rule (__post_init__) refused a made-up value
        return SchemaProblem(
            label,
            f"a version {before} record, upcast to version {new_version}, is refused: {exc.message} "
            "(the upcasters do not produce the new version's fields)",
        )
    except KeyError as exc:
        return SchemaProblem(
            label, f"an upcaster from version {before} looks up {exc}, which a version {before} record does not hold"
        )
    except Exception:  # an upcaster that parses a made-up value: inconclusive
        return None
    return None


def probe_upcasters(
    recorded: Mapping[str, Any], aggregates: list[AggregateSpec], policies: list[PolicySpec]
) -> list[SchemaProblem]:
    """Problems of the upcaster chains from each recorded version to the code's (see the module docstring)."""
    problems: list[SchemaProblem | None] = []
    for spec in aggregates:
        entry = recorded["aggregates"].get(spec.name)
        if entry is None:
            continue
        for name, old in sorted(entry["events"].items()):
            kind = spec.events.get(name)
            if kind is not None:
                problems.append(
                    _probe(
                        f"{spec.name} event {name}",
                        old,
                        kind.version,
                        partial(spec.decode_event, name, old["version"]),
                    )
                )
        state = entry["state"]
        problems.append(
            _probe(
                f"{spec.name} state",
                state,
                spec.state.version,
                partial(spec.decode_state, state["version"]),
            )
        )
    for policy in policies:
        pentry = recorded["policies"].get(policy.name)
        if pentry is None or pentry["state"] is None or policy.state is None:
            continue
        old_state = pentry["state"]
        problems.append(
            _probe(
                f"policy {policy.name} state",
                old_state,
                policy.state_version,
                partial(policy.decode_state, old_state["version"]),
            )
        )
    return [p for p in problems if p is not None]
