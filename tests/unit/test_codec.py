from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Literal

import pytest

from foldline import AggregateDefinitionError, ValidationError, from_json, to_json


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Item:
    sku: str
    qty: int

    def __post_init__(self) -> None:
        if self.qty <= 0:
            raise ValueError("qty must be positive")


@dataclass(frozen=True)
class Order:
    items: tuple[Item, ...]
    price: Decimal
    day: date
    color: Color
    kind: Literal["a", "b"] = "a"
    note: str | None = None
    tags: dict[str, int] | None = None


def test_round_trip_keeps_types_exactly():
    order = Order((Item("x", 2),), Decimal("10.10"), date(2026, 1, 31), Color.BLUE, "b", None, {"k": 1})
    data = to_json(order)
    assert data["price"] == "10.10" and data["day"] == "2026-01-31" and data["color"] == "blue"
    assert from_json(Order, data) == order


@pytest.mark.parametrize(
    ("patch", "field", "words"),
    [
        ({"price": 1.1}, "price", "floats lose cents"),
        ({"price": "abc"}, "price", "not a decimal"),
        ({"price": "NaN"}, "price", "finite"),
        ({"day": "31/01/2026"}, "day", "YYYY-MM-DD"),
        ({"color": "green"}, "color", "must be one of"),
        ({"kind": "c"}, "kind", "must be one of"),
        ({"items": [{"sku": "x", "qty": 0}]}, "items[0]", "qty must be positive"),
        ({"items": [{"sku": "x", "qty": True}]}, "items[0].qty", "expected an integer"),
        ({"items": "nope"}, "items", "expected a list"),
        ({"extra": 1}, "payload", "unknown field"),
    ],
)
def test_invalid_payloads_name_the_field(patch, field, words):
    data = {"items": [], "price": "1", "day": "2026-01-01", "color": "red", **patch}
    with pytest.raises(ValidationError) as info:
        from_json(Order, data)
    assert field in str(info.value) and words in str(info.value)


def test_missing_required_field():
    with pytest.raises(ValidationError, match="price: is required"):
        from_json(Order, {"items": [], "day": "2026-01-01", "color": "red"})


def test_unsupported_field_type_is_a_definition_error():
    @dataclass(frozen=True)
    class Bad:
        value: set[int]

    with pytest.raises(AggregateDefinitionError):
        to_json(Bad({1}))


def test_required_field_missing_while_an_optional_one_is_given():
    with pytest.raises(ValidationError, match="price: is required"):
        from_json(Order, {"items": [], "day": "2026-01-01", "color": "red", "note": "n", "kind": "a"})


def test_nested_paths_name_map_entries_and_list_items():
    with pytest.raises(ValidationError, match=r"tags\.k: expected an integer"):
        from_json(Order, {"items": [], "price": "1", "day": "2026-01-01", "color": "red", "tags": {"k": "x"}})
    with pytest.raises(ValidationError, match=r"^x\.items\[1\]\.qty: expected an integer"):
        from_json(
            Order,
            {
                "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": "2"}],
                "price": "1",
                "day": "2026-01-01",
                "color": "red",
            },
            path="x",
        )


def test_encoded_keys_put_plain_fields_first_as_on_the_topics():
    """The order of a state's or event's keys is in the bytes on the topics: fields whose values are
    JSON already (str, int, ...) come first, in declaration order, then the converted ones (an optional
    field among them)."""
    order = Order((Item("a", 1),), Decimal("1.50"), date(2026, 1, 2), Color.RED, note="n", tags={"x": 1})
    encoded = to_json(order)
    assert list(encoded) == ["kind", "items", "price", "day", "color", "note", "tags"]
    assert encoded == {
        "kind": "a",
        "items": [{"sku": "a", "qty": 1}],
        "price": "1.50",
        "day": "2026-01-02",
        "color": "red",
        "note": "n",
        "tags": {"x": 1},
    }


@dataclass(frozen=True)
class Loose:
    value: object
    more: tuple[object, ...] = ()


class Word(enum.StrEnum):
    A = "a\x00"


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "caf\u00e9",
        "nul\x00",
        "\ud800",
        1 << 63,
        -(1 << 63),
        (1 << 63) - 1,
        True,
        None,
        float("inf"),
        1.5,
        Decimal("12.50"),
        Decimal("NaN"),
        Decimal("1e1001"),
        Decimal("1e-1001"),
        Decimal("1" * 1001),
        date(2026, 1, 1),
        Word.A,
        {"k": "v", "\x00": 1},
        {"k": ["x", {"y": 1 << 64}]},
        {1: "fine"},
        [Decimal("1"), "a"],
        frozenset({"a", "b\x00"}),
    ],
)
def test_fast_command_check_agrees_with_the_thorough_one(value):
    """``check_command_values`` passes a value on a fast path only when the thorough walk, which names the
    field at fault, would find nothing too."""
    from foldline.codec import _fine, _value_problem

    for wrapped in (value, Loose(value), Loose("ok", ("x", value)), [value], {"k": value}):
        assert _fine(wrapped) == (_value_problem(wrapped) is None), wrapped
