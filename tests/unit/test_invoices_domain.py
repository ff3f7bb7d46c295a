"""Every rule of the invoices domain, on the pure aggregate: no services."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from foldline import AggregateSpec, Rejection, ValidationError
from foldline.examples.invoices import (
    AddLineItem,
    CreateInvoice,
    DeleteInvoice,
    Invoice,
    Invoices,
    RecordPayment,
    RemoveLineItem,
    SendInvoice,
)

AGG = Invoices()
SPEC = AggregateSpec(AGG)
CREATE = CreateInvoice("ACME", "EUR", date(2026, 11, 1), date(2026, 12, 1))


def run(*commands: object) -> tuple[Invoice, object]:
    """Apply commands in order; returns the final state and the last decision."""
    state, decision = AGG.initial_state(), None
    for command in commands:
        decision = AGG.decide(state, command)
        if not isinstance(decision, Rejection):
            state = AGG.fold(decision, state)
    return state, decision


def line(line_id: str = "a", qty: int = 2, price: str = "10.00") -> AddLineItem:
    return AddLineItem(line_id, "Work", qty, Decimal(price))


def rejected(decision: object, words: str) -> bool:
    return isinstance(decision, Rejection) and words in decision.reason


def test_happy_life_with_partial_payments():
    state, decision = run(
        CREATE,
        line("a", 3, "100.00"),
        line("b", 1, "45.50"),
        RemoveLineItem("b"),
        SendInvoice(),
        RecordPayment("p1", Decimal("100.00"), "EUR"),
    )
    assert state.status == "sent" and state.total == Decimal("300.00") and state.balance == Decimal("200.00")
    state, decision = run(
        CREATE,
        line("a", 3, "100.00"),
        SendInvoice(),
        RecordPayment("p1", Decimal("100"), "EUR"),
        RecordPayment("p2", Decimal("200.00"), "EUR"),
    )
    assert state.status == "paid" and state.balance == 0
    assert [type(e).__name__ for e in decision] == ["PaymentRecorded", "InvoicePaid"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "command", [line(), RemoveLineItem("a"), SendInvoice(), RecordPayment("p", Decimal(1), "EUR"), DeleteInvoice()]
)
def test_nothing_before_create(command):
    assert rejected(run(command)[1], "does not exist")


def test_no_second_create():
    assert rejected(run(CREATE, CREATE)[1], "already exists")


@pytest.mark.parametrize(
    "command",
    [CREATE, line(), RemoveLineItem("a"), SendInvoice(), RecordPayment("p", Decimal(1), "EUR"), DeleteInvoice()],
)
def test_nothing_after_delete(command):
    assert rejected(run(CREATE, line(), DeleteInvoice("dup"), command)[1], "deleted")


def test_no_payment_above_balance():
    _, decision = run(CREATE, line("a", 1, "50.00"), SendInvoice(), RecordPayment("p", Decimal("50.01"), "EUR"))
    assert rejected(decision, "exceeds the balance 50.00")


def test_no_payment_in_other_currency_or_twice_or_before_sending_or_after_paid():
    base = (CREATE, line("a", 1, "50.00"))
    assert rejected(run(*base, RecordPayment("p", Decimal(1), "EUR"))[1], "after the invoice was sent")
    assert rejected(run(*base, SendInvoice(), RecordPayment("p", Decimal(1), "USD"))[1], "in USD")
    assert rejected(
        run(*base, SendInvoice(), RecordPayment("p", Decimal(1), "EUR"), RecordPayment("p", Decimal(1), "EUR"))[1],
        "already recorded",
    )
    assert rejected(
        run(*base, SendInvoice(), RecordPayment("p", Decimal(50), "EUR"), RecordPayment("q", Decimal(1), "EUR"))[1],
        "paid in full",
    )


def test_no_line_item_changes_after_sending():
    assert rejected(run(CREATE, line(), SendInvoice(), line("b"))[1], "after the invoice was sent")
    assert rejected(run(CREATE, line(), SendInvoice(), RemoveLineItem("a"))[1], "after the invoice was sent")


def test_line_item_ids_and_sending_rules():
    assert rejected(run(CREATE, line("a"), line("a"))[1], "already exists")
    assert rejected(run(CREATE, RemoveLineItem("zz"))[1], "does not exist")
    assert rejected(run(CREATE, SendInvoice())[1], "at least one line item")
    assert rejected(run(CREATE, line(), SendInvoice(), SendInvoice())[1], "already sent")


def test_no_delete_after_payment():
    _, decision = run(CREATE, line(), SendInvoice(), RecordPayment("p", Decimal(1), "EUR"), DeleteInvoice())
    assert rejected(decision, "cannot be deleted")


@pytest.mark.parametrize(
    ("type_", "payload", "words"),
    [
        ("AddLineItem", {"line_id": "a", "description": "d", "quantity": 0, "unit_price": "1"}, "positive"),
        ("AddLineItem", {"line_id": "a", "description": "d", "quantity": -2, "unit_price": "1"}, "positive"),
        ("AddLineItem", {"line_id": "a", "description": "d", "quantity": 1, "unit_price": 1.5}, "floats"),
        ("AddLineItem", {"line_id": "a", "description": "d", "quantity": 1, "unit_price": "1.001"}, "two decimal"),
        (
            "CreateInvoice",
            {"customer": "c", "currency": "EUR", "issue_date": "2026-02-01", "due_date": "2026-01-31"},
            "before issue_date",
        ),
        (
            "CreateInvoice",
            {"customer": "c", "currency": "euro", "issue_date": "2026-02-01", "due_date": "2026-03-01"},
            "ISO 4217",
        ),
        (
            "CreateInvoice",
            {"customer": " ", "currency": "EUR", "issue_date": "2026-02-01", "due_date": "2026-03-01"},
            "customer must not be empty",
        ),
        ("RecordPayment", {"payment_id": "p", "amount": "0", "currency": "EUR"}, "greater than zero"),
        ("RecordPayment", {"payment_id": "p", "amount": "-5", "currency": "EUR"}, "greater than zero"),
    ],
)
def test_payload_rules_on_the_way_in(type_, payload, words):
    with pytest.raises(ValidationError, match=words):
        SPEC.decode_command(type_, payload)


def test_money_is_decimal_with_currency():
    state, _ = run(CREATE, line("a", 3, "0.10"))
    assert state.total == Decimal("0.30") and isinstance(state.total, Decimal) and state.currency == "EUR"


def test_state_round_trips_through_snapshot_encoding():
    state, _ = run(CREATE, line("a", 3, "19.99"), SendInvoice(), RecordPayment("p", Decimal("9.99"), "EUR"))
    assert SPEC.decode_state(1, SPEC.encode_state(state)) == state


def test_a_line_item_added_keeps_every_other_field():
    """``evolve`` builds the state after ``LineItemAdded`` field by field (a hot path): it must keep each
    field as ``dataclasses.replace`` would, whatever fields ``Invoice`` gains."""
    import dataclasses

    from foldline.examples.invoices.domain import LineItem, LineItemAdded

    state = Invoice(
        "sent", "ACME", "EUR", date(2026, 1, 1), date(2026, 2, 1), (LineItem("a", "d", 1, Decimal("1")),),
        Decimal("0.50"), ("p1",),
    )  # fmt: skip
    # Every field away from its default, so that one the direct build forgot would show.
    assert all(getattr(state, f.name) != f.default for f in dataclasses.fields(Invoice))
    added = LineItemAdded("b", "e", 2, Decimal("3.00"))
    line = LineItem("b", "e", 2, Decimal("3.00"))
    assert AGG.evolve(state, added) == dataclasses.replace(state, lines=(*state.lines, line))
