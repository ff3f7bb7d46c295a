from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from foldline import STATE, Aggregate, AggregateDefinitionError, AggregateSpec, UnknownTypeError, ValidationError
from foldline.aggregate import load_aggregate


@dataclass(frozen=True)
class Renamed:
    """Version 2 of an event: ``who`` was called ``name`` in version 1."""

    __schema_version__ = 2
    who: str


@dataclass(frozen=True)
class Rename:
    who: str


@dataclass(frozen=True)
class Person:
    __schema_version__ = 2
    who: str = ""


class People(Aggregate[Person]):
    name = "people"
    state_type = Person
    commands: ClassVar[tuple[type, ...]] = (Rename,)
    events = (Renamed,)
    upcasters = {
        ("Renamed", 1): lambda p: {"who": p["name"]},
        (STATE, 1): lambda s: {"who": s.get("name", "")},
    }

    def initial_state(self) -> Person:
        return Person()

    def decide(self, state, command):
        return [Renamed(command.who)]

    def evolve(self, state, event):
        return Person(event.who)


def test_upcasters_read_old_events_and_snapshots():
    spec = AggregateSpec(People())
    assert spec.decode_event("Renamed", 1, {"name": "ada"}) == Renamed("ada")
    assert spec.decode_event("Renamed", 2, {"who": "ada"}) == Renamed("ada")
    assert spec.decode_state(1, {"name": "bob"}) == Person("bob")
    with pytest.raises(ValidationError, match="newer than this code"):
        spec.decode_event("Renamed", 3, {"who": "x"})


def test_unknown_types_are_clear():
    spec = AggregateSpec(People())
    with pytest.raises(UnknownTypeError, match="no command type 'Fly'"):
        spec.decode_command("Fly", {})
    with pytest.raises(UnknownTypeError):
        spec.decode_event("Flew", 1, {})


def test_definitions_are_checked():
    class NotFrozen(People):
        @dataclass
        class Mutable:
            x: int

        commands = (Mutable,)

    with pytest.raises(AggregateDefinitionError, match="frozen dataclass"):
        AggregateSpec(NotFrozen())

    class BadName(People):
        name = "Bad Name"

    with pytest.raises(AggregateDefinitionError, match="lowercase"):
        AggregateSpec(BadName())


@pytest.mark.parametrize("path", ["nocolon", "no.such.module:X", "foldline:Nope", "foldline:FoldlineError"])
def test_load_aggregate_errors(path):
    with pytest.raises(AggregateDefinitionError):
        load_aggregate(path)


def test_load_aggregate_by_path():
    assert load_aggregate("foldline.examples.invoices:Invoices").name == "invoices"
