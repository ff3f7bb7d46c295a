"""Deadlines in a policy's partition task: kept in the state record, fired once, cancelled by a later
event, found again after a restart. The task runs on a real local store (SQLite), without Kafka."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from foldline import AggregateSpec, Cancel, Emit, Happened, PolicySpec, Schedule
from foldline.examples.invoices import Invoices, MarkOverdue, OverdueOnDueDate
from foldline.examples.invoices.domain import InvoiceCreated, InvoicePaid, InvoiceSent, LineItemAdded
from foldline.examples.invoices.policies import overdue_at
from foldline.ids import AggregateId, CommandId
from foldline.policy.task import PolicyTask
from foldline.records import CommandEnvelope, EventRecord
from foldline.store.base import open_state_store

SPEC = AggregateSpec(Invoices())
BEFORE = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
AFTER = datetime(2026, 12, 2, 0, 0, 1, tzinfo=UTC)


def record(aggregate_id: str, version: int, event: object) -> bytes:
    kind = SPEC.event_kind(event)
    return EventRecord(AggregateId(aggregate_id), kind.name, version, kind.encode(event), CommandId("c")).to_bytes()


def life(aggregate_id: str, paid: bool) -> list[bytes]:
    events: list[object] = [
        InvoiceCreated("ACME", "EUR", date(2026, 11, 1), date(2026, 12, 1)),
        LineItemAdded("l1", "work", 1, Decimal("10.00")),
        InvoiceSent(Decimal("10.00")),
    ]
    if paid:
        events.append(InvoicePaid(Decimal("10.00")))
    return [record(aggregate_id, v, e) for v, e in enumerate(events, 1)]


def task(path) -> PolicyTask:
    t = PolicyTask(PolicySpec(OverdueOnDueDate()), SPEC, 0, open_state_store("sqlite", path), topic="invoices.events")
    t.index_deadlines()
    return t


def commit(t: PolicyTask) -> None:
    t.committed(t.snapshots(), t.store.changelog_offset() + 1)


def test_the_example_schedules_at_the_due_date_and_cancels_on_payment():
    policy = OverdueOnDueDate()
    created = Happened("invoices", "I", 1, InvoiceCreated("A", "EUR", date(2026, 11, 1), date(2026, 12, 1)))
    _, out = policy.run([created, Happened("invoices", "I", 3, InvoiceSent(Decimal(1)))])
    assert out == [Schedule("overdue", overdue_at(date(2026, 12, 1)), Emit("I", MarkOverdue()))]
    assert overdue_at(date(2026, 12, 1)) == datetime(2026, 12, 2, tzinfo=UTC)
    _, out = policy.run([created, Happened("invoices", "I", 5, InvoicePaid(Decimal(1)))])
    assert out == [Cancel("overdue")]


def test_a_deadline_fires_once_and_survives_a_restart(tmp_path):
    t = task(tmp_path / "s")
    for offset, value in enumerate(life("INV-1", paid=False) + life("INV-2", paid=True)):
        assert t.handle(b"k", value, offset).commands == []
    commit(t)
    assert t.fire(BEFORE) == [] and t.pending() == 1
    t.close()

    t = task(tmp_path / "s")  # a restart: the deadline is found in the store
    assert t.deadline_keys == {"INV-1": AFTER.replace(second=0)}
    assert not t.due(BEFORE) and t.due(AFTER)
    [fired] = t.fire(AFTER)
    envelope = CommandEnvelope.from_bytes(fired.value)
    assert (fired.topic, fired.key, envelope.type) == ("invoices.commands", b"INV-1", "MarkOverdue")
    assert envelope.command_id == "invoice-overdue:invoices:INV-1:3:0"
    commit(t)
    assert t.fire(AFTER) == [] and not t.due(AFTER)
    t.close()
    t = task(tmp_path / "s")
    assert t.fire(AFTER) == [] and t.pending() == 0


def test_an_aborted_firing_fires_again(tmp_path):
    t = task(tmp_path / "s")
    for offset, value in enumerate(life("INV-1", paid=False)):
        t.handle(b"k", value, offset)
    commit(t)
    assert len(t.fire(AFTER)) == 1
    assert not t.due(AFTER)
    t.discard()  # the transaction aborted: the deadline is pending again
    assert t.due(AFTER)
    assert len(t.fire(AFTER)) == 1
