"""The schema gate: each incompatible change it must catch, each compatible one it must allow, the file, the CLI."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field, make_dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest

from foldline import (
    STATE,
    Aggregate,
    AggregateSpec,
    ConfigurationError,
    Policy,
    PolicySpec,
    check_schema_file,
    compare_schemas,
    schema_of,
)
from foldline.schema import probe_upcasters, read_schema_file, render
from foldline.testing import assert_schema_compatible

ROOT = Path(__file__).resolve().parents[2]
INVOICES_FILE = ROOT / "services/foldline/examples/invoices/foldline-schema.json"
ACCOUNTS_FILE = ROOT / "examples/team-image/foldline-schema.json"


def kind(name: str, *fields: Any, version: int = 1, wire_name: str | None = None) -> type[Any]:
    """A frozen dataclass ``name`` with ``fields`` (``(name, type)`` or ``(name, type, field(...))``)."""
    cls = make_dataclass(name, list(fields), frozen=True)
    if version != 1:
        cls.__schema_version__ = version  # type: ignore[attr-defined]
    if wire_name is not None:
        cls.__foldline_type__ = wire_name  # type: ignore[attr-defined]
    return cls


State = kind("State", ("count", int, field(default=0)))
Add = kind("Add", ("amount", int))
Added = kind("Added", ("amount", int), ("note", str))


def things(
    *,
    commands: tuple[type[Any], ...] = (Add,),
    events: tuple[type[Any], ...] = (Added,),
    state: type[Any] = State,
    upcasters: dict[tuple[str, int], Any] | None = None,
    command_upcasters: dict[tuple[str, int], Any] | None = None,
    name: str = "things",
) -> AggregateSpec:
    cls = type(
        "Things",
        (Aggregate,),
        {
            "name": name,
            "state_type": state,
            "commands": commands,
            "events": events,
            "upcasters": upcasters or {},
            "command_upcasters": command_upcasters or {},
        },
    )
    return AggregateSpec(cls())


def compare(old: AggregateSpec, new: AggregateSpec) -> list[str]:
    """The problems of ``new`` against ``old``'s recorded schema (through the file's JSON form)."""
    recorded = json.loads(render(schema_of([old])))
    return [str(p) for p in compare_schemas(recorded, schema_of([new])).problems]


def one(problems: list[str], *fragments: str) -> None:
    assert len(problems) == 1, problems
    for fragment in fragments:
        assert fragment in problems[0], (fragment, problems[0])


def upcast(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


# -- events: incompatible without a new version ---------------------------------------------------------
@pytest.mark.parametrize(
    ("changed", "fragments"),
    [
        (kind("Added", ("amount", int)), ("field note", "removed or renamed")),
        (kind("Added", ("amount", str), ("note", str)), ("field amount", "type changed from integer to string")),
        (kind("Added", ("amount", bool), ("note", str)), ("field amount", "integer to boolean")),
        (kind("Added", ("amount", int), ("note", str), ("tax", int)), ("field tax", "new and required")),
    ],
    ids=["removed", "type", "int-to-bool", "new-required"],
)
def test_incompatible_event_changes_are_named(changed: type[Any], fragments: tuple[str, ...]) -> None:
    problems = compare(things(), things(events=(changed,)))
    one(problems, "things event Added", "__schema_version__", *fragments)


def test_a_rename_reports_the_old_field_and_the_new_required_one() -> None:
    problems = compare(things(), things(events=(kind("Added", ("amount", int), ("remark", str)),)))
    assert len(problems) == 2
    assert "field note: removed or renamed" in problems[0]
    assert "field remark: is new and required" in problems[1]


def test_a_field_that_became_required_is_incompatible() -> None:
    old = things(events=(kind("Added", ("amount", int), ("note", str, field(default=""))),))
    one(compare(old, things()), "things event Added", "field note: became required")


def test_optional_to_plain_is_incompatible() -> None:
    old = things(events=(kind("Added", ("amount", int | None), ("note", str)),))
    one(compare(old, things()), "field amount", "no longer accepts null")


def test_number_to_integer_is_incompatible() -> None:
    old = things(events=(kind("Added", ("amount", float), ("note", str)),))
    one(compare(old, things()), "field amount", "type changed from number to integer")


def test_a_literal_or_enum_that_lost_a_value_is_incompatible() -> None:
    old = things(events=(kind("Added", ("amount", int), ("note", Literal["a", "b"])),))
    new = things(events=(kind("Added", ("amount", int), ("note", Literal["a"])),))
    one(compare(old, new), "field note", 'no longer accepts "b"')

    class Colour(enum.Enum):
        RED = "red"
        BLUE = "blue"

    class Shade(enum.Enum):
        RED = "red"

    old = things(events=(kind("Added", ("amount", int), ("note", Colour)),))
    new = things(events=(kind("Added", ("amount", int), ("note", Shade)),))
    one(compare(old, new), "field note", 'no longer accepts "blue"')


@dataclass(frozen=True)
class Line:
    sku: str
    qty: int


@dataclass(frozen=True)
class LineRenamed:  # a nested class's name is only a label: its fields are what travels
    sku: str
    qty: str


def test_a_nested_field_is_named_by_its_path() -> None:
    old = things(state=kind("State", ("lines", tuple[Line, ...], field(default=()))))
    new = things(state=kind("State", ("lines", tuple[LineRenamed, ...], field(default=()))))
    one(compare(old, new), "things state", "field lines[].qty: type changed from integer to string")
    mapped = things(state=kind("State", ("by_sku", dict[str, int], field(default_factory=dict))))
    mapped2 = things(state=kind("State", ("by_sku", dict[str, str], field(default_factory=dict))))
    one(compare(mapped, mapped2), "field by_sku{}", "integer to string")


def test_a_removed_event_type_is_incompatible() -> None:
    other = kind("Other", ("x", int))
    one(compare(things(events=(Added, other)), things()), "things event Other", "removed or renamed")
    renamed = kind("Added", ("amount", int), ("note", str), wire_name="ThingAdded")
    problems = compare(things(), things(events=(renamed,)))
    one(problems, "things event Added", "its recorded events could no longer be read")


def test_a_version_that_went_down_is_incompatible() -> None:
    v2 = kind("Added", ("amount", int), ("note", str), version=2)
    old = things(events=(v2,), upcasters={("Added", 1): upcast})
    one(compare(old, things()), "things event Added", "went down from 2 to 1")


def test_a_new_version_needs_an_upcaster_from_every_older_version() -> None:
    v2 = kind("Added", ("amount", int), version=2)
    one(compare(things(), things(events=(v2,))), "things event Added", "no upcaster from version 1")
    v3 = kind("Added", ("amount", int), version=3)
    problems = compare(things(), things(events=(v3,), upcasters={("Added", 2): upcast}))
    one(problems, "things event Added", "schema version 3 has no upcaster from version 1")


def test_a_dropped_upcaster_is_caught_after_the_file_was_updated() -> None:
    v2 = kind("Added", ("amount", int), version=2)
    recorded = things(events=(v2,), upcasters={("Added", 1): upcast})
    one(compare(recorded, things(events=(v2,))), "no upcaster from version 1")


def test_state_changes_follow_the_event_rules() -> None:
    changed = kind("State", ("count", str, field(default="")))
    one(compare(things(), things(state=changed)), "things state", "field count: type changed")
    v2 = kind("State", ("total", str, field(default="")), version=2)
    assert compare(things(), things(state=v2, upcasters={(STATE, 1): upcast})) == []
    one(compare(things(), things(state=v2)), "things state", "no upcaster from version 1")


# -- events: compatible ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "changed",
    [
        kind("Added", ("amount", int), ("note", str), ("tax", int, field(default=0))),
        kind("Added", ("note", str), ("amount", int)),
        kind("Added", ("amount", int | None), ("note", str)),
        kind("Added", ("amount", float), ("note", str)),
        kind("Added", ("amount", Decimal), ("note", str)),
        kind("Added", ("amount", Any), ("note", str)),
        kind("Added", ("amount", int), ("note", str, field(default=""))),
        kind("ThingAdded", ("amount", int), ("note", str), wire_name="Added"),
    ],
    ids=["new-optional", "reordered", "optional", "int-to-number", "int-to-decimal", "any", "now-optional", "class"],
)
def test_compatible_event_changes_pass(changed: type[Any]) -> None:
    assert compare(things(), things(events=(changed,))) == []


def test_widened_literals_and_sequences_pass() -> None:
    old = things(
        state=kind("State", ("s", Literal["a"], field(default="a")), ("t", tuple[int, ...], field(default=())))
    )
    wider = things(
        state=kind("State", ("s", Literal["a", "b"], field(default="a")), ("t", list[int], field(default_factory=list)))
    )
    text = things(
        state=kind("State", ("s", str, field(default="a")), ("t", frozenset[int], field(default=frozenset())))
    )
    assert compare(old, wider) == []
    assert compare(old, text) == []
    assert compare(wider, old) != []  # and the reverse is caught


def test_new_types_aggregates_and_versions_with_upcasters_pass() -> None:
    other = kind("Other", ("x", int))
    assert compare(things(), things(events=(Added, other), commands=(Add, kind("Other2", ("y", int))))) == []
    v2 = kind("Added", ("total", str), version=2)  # fields changed freely: the upcaster maps them
    assert compare(things(), things(events=(v2,), upcasters={("Added", 1): upcast})) == []
    recorded = json.loads(render(schema_of([things()])))
    comparison = compare_schemas(recorded, schema_of([things(), things(name="others")]))
    assert comparison.ok
    assert "new aggregate others" in comparison.changes


# -- commands --------------------------------------------------------------------------------------------
def test_incompatible_command_changes_are_named_for_clients() -> None:
    one(
        compare(things(), things(commands=(kind("Add", ("total", int, field(default=0))),))),
        "things command Add",
        "field amount: removed",
        "gateway",
    )
    one(
        compare(things(), things(commands=(kind("Add", ("amount", int), ("who", str)),))),
        "things command Add",
        "field who: is new and required",
    )
    one(
        compare(things(), things(commands=(kind("Add", ("amount", str)),))),
        "things command Add",
        "field amount: type changed",
    )
    one(compare(things(), things(commands=())), "things command Add", "clients that send it would be refused")


def test_a_new_command_version_does_not_excuse_a_breaking_change_for_gateway_clients() -> None:
    v2 = kind("Add", ("total", int), version=2)
    problems = compare(things(), things(commands=(v2,), command_upcasters={("Add", 1): upcast}))
    assert any("field amount: removed" in p for p in problems), problems
    assert any("field total: is new and required" in p for p in problems), problems


def test_a_new_command_version_needs_command_upcasters_from_the_recorded_one() -> None:
    v2 = kind("Add", ("amount", int), ("note", str, field(default="")), version=2)
    one(compare(things(), things(commands=(v2,))), "things command Add", "without a command upcaster from version 1")
    assert compare(things(), things(commands=(v2,), command_upcasters={("Add", 1): upcast})) == []
    # once recorded at version 2, the command upcaster may go (commands are not kept forever)
    recorded = things(commands=(v2,), command_upcasters={("Add", 1): upcast})
    assert compare(recorded, things(commands=(v2,))) == []


def test_compatible_command_changes_pass() -> None:
    assert compare(things(), things(commands=(kind("Add", ("amount", int), ("note", str, field(default=""))),))) == []
    assert compare(things(), things(commands=(kind("Add", ("amount", Decimal)),))) == []


# -- policies --------------------------------------------------------------------------------------------
def policy(state: type[Any] | None, upcasters: dict[tuple[str, int], Any] | None = None) -> PolicySpec:
    cls = type(
        "Watch",
        (Policy,),
        {
            "name": "watch",
            "sources": (type(things().aggregate),),
            "targets": (),
            "state_type": state,
            "upcasters": upcasters or {},
        },
    )
    return PolicySpec(cls())


def test_a_policy_state_follows_the_state_rules() -> None:
    memo = kind("Memo", ("who", str, field(default="")))
    recorded = json.loads(render(schema_of([], [policy(memo)])))
    changed = kind("Memo", ("who", int, field(default=0)))
    problems = [str(p) for p in compare_schemas(recorded, schema_of([], [policy(changed)])).problems]
    one(problems, "policy watch state", "field who: type changed from string to integer")
    v2 = kind("Memo", ("whom", int, field(default=0)), version=2)
    assert compare_schemas(recorded, schema_of([], [policy(v2, {(STATE, 1): upcast})])).ok
    assert compare_schemas(recorded, schema_of([], [policy(None)])).ok  # dropping the state loses nothing readable


# -- the file --------------------------------------------------------------------------------------------
def test_the_file_is_stable_sorted_and_reads_back(tmp_path: Path) -> None:
    doc = schema_of([things()])
    text = render(doc)
    assert text == render(json.loads(text))
    assert text.endswith("}\n")
    assert '"amount": {"required": true, "type": "integer"}' in text  # one field, one line
    path = tmp_path / "schema.json"
    path.write_text(text)
    assert read_schema_file(path) == json.loads(text)


def test_a_wrongly_shaped_file_names_the_place(tmp_path: Path) -> None:
    doc = json.loads(render(schema_of([things()])))
    doc["aggregates"]["things"]["events"]["Added"]["fields"]["amount"]["type"] = "int"
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(
        ConfigurationError, match=r"aggregates\.things\.events\.Added\.fields\.amount\.type: unknown type 'int'"
    ):
        read_schema_file(path)


def test_the_examples_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    comparison = check_schema_file(INVOICES_FILE)
    assert comparison.ok, comparison.problems
    monkeypatch.syspath_prepend(str(ROOT / "examples/team-image"))
    assert_schema_compatible(ACCOUNTS_FILE)
    recorded = read_schema_file(INVOICES_FILE)
    assert {"invoices", "customers"} <= set(recorded["aggregates"])
    assert {"invoice-charges", "invoice-settlements", "invoice-overdue"} <= set(recorded["policies"])


def test_the_test_helper_names_each_problem(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    recorded = json.loads(render(schema_of([things()])))
    recorded["aggregates"]["things"]["events"]["Added"]["fields"]["gone"] = {"required": True, "type": "string"}
    recorded["aggregates"]["things"]["import"] = None
    path.write_text(render(recorded))
    with pytest.raises(AssertionError, match="things event Added: field gone: removed or renamed"):
        assert_schema_compatible(path, aggregates=[type(things().aggregate)])
    with pytest.raises(ConfigurationError, match="no import path"):
        assert_schema_compatible(path)


@dataclass(frozen=True)
class Node:
    name: str
    children: tuple[Node, ...] = ()


def test_recursive_types_and_removed_aggregates() -> None:
    tree = things(state=kind("State", ("root", Node | None, field(default=None))))
    doc = schema_of([tree])
    root = doc["aggregates"]["things"]["state"]["fields"]["root"]["type"]["optional"]
    assert root["fields"]["children"]["type"] == {"array": {"object": "Node", "recursive": True}}
    assert compare(tree, tree) == []
    recorded = json.loads(render(schema_of([things(), things(name="others")])))
    problems = [str(p) for p in compare_schemas(recorded, schema_of([things()])).problems]
    one(problems, "aggregate others", "not in the code")


# -- the upcasters, run on a record of the recorded shape ------------------------------------------------
def probe(old: AggregateSpec, new: AggregateSpec) -> list[str]:
    recorded = json.loads(render(schema_of([old])))
    return [str(p) for p in probe_upcasters(recorded, [new], [])]


Totalled = kind("Added", ("total", int), version=2)


def test_an_upcaster_that_does_not_produce_the_new_fields_is_caught() -> None:
    one(
        probe(things(), things(events=(Totalled,), upcasters={("Added", 1): upcast})),
        "things event Added",
        "unknown field",
    )
    missing: dict[tuple[str, int], Any] = {("Added", 1): lambda p: {}}
    one(probe(things(), things(events=(Totalled,), upcasters=missing)), "total: is required")
    wrong_type = {("Added", 1): lambda p: {"total": str(p["amount"])}}
    one(probe(things(), things(events=(Totalled,), upcasters=wrong_type)), "total: expected an integer")
    typo = {("Added", 1): lambda p: {"total": p["amunt"]}}
    one(probe(things(), things(events=(Totalled,), upcasters=typo)), "looks up 'amunt'")


def test_a_right_upcaster_and_inconclusive_samples_pass() -> None:
    right = {("Added", 1): lambda p: {"total": p["amount"]}}
    assert probe(things(), things(events=(Totalled,), upcasters=right)) == []
    assert probe(things(), things()) == []  # no version moved: nothing to run

    @dataclass(frozen=True)
    class Strict:  # the class's own rule refuses the sample's made-up 0: that proves nothing
        total: int

        def __post_init__(self) -> None:
            if self.total <= 0:
                raise ValueError("total must be positive")

    Strict.__schema_version__ = 2  # type: ignore[attr-defined]
    Strict.__foldline_type__ = "Added"  # type: ignore[attr-defined]
    assert probe(things(), things(events=(Strict,), upcasters=right)) == []
    parses = {("Added", 1): lambda p: {"total": int("0x" + p["note"])}}  # ValueError on a made-up value
    assert probe(things(), things(events=(Totalled,), upcasters=parses)) == []


def test_state_and_policy_state_upcasters_are_run() -> None:
    v2 = kind("State", ("total", int, field(default=0)), version=2)
    one(probe(things(), things(state=v2, upcasters={(STATE, 1): upcast})), "things state", "unknown field")
    assert probe(things(), things(state=v2, upcasters={(STATE, 1): lambda s: {"total": s["count"]}})) == []
    memo = kind("Memo", ("who", str, field(default="")))
    memo2 = kind("Memo", ("whom", str, field(default="")), version=2)
    recorded = json.loads(render(schema_of([], [policy(memo)])))
    bad = [str(p) for p in probe_upcasters(recorded, [], [policy(memo2, {(STATE, 1): upcast})])]
    one(bad, "policy watch state", "unknown field")
    assert probe_upcasters(recorded, [], [policy(memo2, {(STATE, 1): lambda s: {"whom": s["who"]}})]) == []


def test_the_check_runs_the_upcasters(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text(render(schema_of([things()])))
    new = things(events=(Totalled,), upcasters={("Added", 1): upcast})
    problems = [str(p) for p in check_schema_file(path, aggregates=[new.aggregate]).problems]
    one(problems, "things event Added", "is refused")
