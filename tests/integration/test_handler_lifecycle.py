"""An invoice's whole life through the real broker, and every bad-input path."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from foldline.aggregate import AggregateSpec
from foldline.records import EventRecord, SnapshotRecord
from foldline.topics import TopicNames
from tests.kafka_support import command, read_topic, send, wait_for_results

pytestmark = pytest.mark.kafka

CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}


def test_invoice_life_events_and_snapshot_fold(kafka_bootstrap, invoices_aggregate, run_handler):
    cls = invoices_aggregate(partitions=3)
    names = TopicNames(cls.name)
    cmds = [
        command("inv-1", "CreateInvoice", CREATE),
        command(
            "inv-1", "AddLineItem", {"line_id": "a", "description": "Consulting", "quantity": 3, "unit_price": "100.00"}
        ),
        command(
            "inv-1", "AddLineItem", {"line_id": "b", "description": "Travel", "quantity": 1, "unit_price": "45.50"}
        ),
        command("inv-1", "RemoveLineItem", {"line_id": "b"}),
        command("inv-1", "SendInvoice"),
        command("inv-1", "RecordPayment", {"payment_id": "p1", "amount": "100.00", "currency": "EUR"}),
        command("inv-1", "RecordPayment", {"payment_id": "p2", "amount": "200.00", "currency": "EUR"}),
    ]
    send(kafka_bootstrap, names.commands, cmds)
    run_handler(cls())
    results = {r.command_id: r for r in wait_for_results(kafka_bootstrap, cls.name, len(cmds))}
    assert [results[c.command_id].status for c in cmds] == ["accepted"] * len(cmds)
    assert [results[c.command_id].version for c in cmds] == [1, 2, 3, 4, 5, 6, 8]
    assert results[cmds[-1].command_id].events == ("PaymentRecorded", "InvoicePaid")

    events = [EventRecord.from_bytes(m.value()) for m in read_topic(kafka_bootstrap, names.events)]
    assert [e.version for e in events] == list(range(1, 9))
    assert {m.key() for m in read_topic(kafka_bootstrap, names.events)} == {b"inv-1"}
    spec = AggregateSpec(cls())
    folded = spec.aggregate.fold(spec.decode_event(e.type, e.schema_version, e.payload) for e in events)
    snaps = [SnapshotRecord.from_bytes(m.value()) for m in read_topic(kafka_bootstrap, names.snapshots)]
    last = snaps[-1]
    assert last.version == 8
    assert spec.decode_state(last.schema_version, last.state) == folded
    assert folded.status == "paid" and folded.balance == Decimal("0.00") and folded.total == Decimal("300.00")
    # co-partitioning: the events and snapshot of inv-1 sit on the commands' partition
    partitions = {m.partition() for m in read_topic(kafka_bootstrap, names.events)}
    partitions |= {m.partition() for m in read_topic(kafka_bootstrap, names.snapshots)}
    assert len(partitions) == 1


def test_conflict_duplicate_and_rejection(kafka_bootstrap, invoices_aggregate, run_handler):
    cls = invoices_aggregate(partitions=1)
    names = TopicNames(cls.name)
    create = command("inv-2", "CreateInvoice", CREATE, expected_version=0)
    stale = command(
        "inv-2",
        "AddLineItem",
        {"line_id": "a", "description": "x", "quantity": 1, "unit_price": "1"},
        expected_version=0,
    )
    good = command(
        "inv-2",
        "AddLineItem",
        {"line_id": "a", "description": "x", "quantity": 1, "unit_price": "1"},
        expected_version=1,
    )
    again = command(
        "inv-2",
        "AddLineItem",
        {"line_id": "zzz", "description": "other", "quantity": 9, "unit_price": "9"},
        command_id=good.command_id,
    )
    pay = command("inv-2", "RecordPayment", {"payment_id": "p", "amount": "1", "currency": "EUR"})
    send(kafka_bootstrap, names.commands, [create, stale, good, again, pay])
    run_handler(cls())
    got = wait_for_results(kafka_bootstrap, cls.name, 4)
    by_id: dict[str, list] = {}
    for r in got:
        by_id.setdefault(r.command_id, []).append(r)
    assert by_id[create.command_id][0].status == "accepted"
    conflict = by_id[stale.command_id][0]
    assert conflict.status == "conflict" and conflict.code == "conflict" and "version 1" in conflict.reason
    first, second = by_id[good.command_id]
    assert first.status == "accepted" and first.version == 2 and not first.duplicate
    assert second.duplicate and second.version == 2 and second.events == first.events  # not executed twice
    rejected = by_id[pay.command_id][0]
    assert rejected.status == "rejected" and "after the invoice was sent" in rejected.reason
    events = [EventRecord.from_bytes(m.value()) for m in read_topic(kafka_bootstrap, names.events)]
    assert [e.type for e in events] == ["InvoiceCreated", "LineItemAdded"]


@pytest.mark.parametrize(
    ("record", "code"),
    [
        ((b"inv-3", b"\xff\xfe not json"), "undecodable"),
        (
            (
                b"inv-3",
                json.dumps(
                    {"command_id": "c-unknown", "aggregate_id": "inv-3", "type": "Refund", "payload": {}}
                ).encode(),
            ),
            "unknown_type",
        ),
        (
            (
                b"inv-3",
                json.dumps(
                    {
                        "command_id": "c-invalid",
                        "aggregate_id": "inv-3",
                        "type": "CreateInvoice",
                        "payload": {**CREATE, "due_date": "2026-01-01"},
                    }
                ).encode(),
            ),
            "invalid_payload",
        ),
        (
            (
                b"inv-3",
                json.dumps(
                    {
                        "command_id": "c-float",
                        "aggregate_id": "inv-3",
                        "type": "AddLineItem",
                        "payload": {"line_id": "a", "description": "d", "quantity": 1, "unit_price": 1.1},
                    }
                ).encode(),
            ),
            "invalid_payload",
        ),
        (
            (
                b"inv-3",
                json.dumps({"command_id": "c-boom", "aggregate_id": "inv-3", "type": "Boom", "payload": {}}).encode(),
            ),
            "decide_failed",
        ),
    ],
    ids=["undecodable", "unknown-type", "invalid-payload", "float-money", "decide-raises"],
)
def test_bad_input_becomes_failed_result_and_dead_letter(
    kafka_bootstrap, invoices_aggregate, run_handler, record, code
):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Boom:
        pass

    base = invoices_aggregate(partitions=1)

    class Exploding(base):  # type: ignore[misc, valid-type]
        commands = (*base.commands, Boom)

        def decide(self, state, command):
            if isinstance(command, Boom):
                raise RuntimeError("the domain had a bug")
            return super().decide(state, command)

    names = TopicNames(base.name)
    follow = command("inv-3", "CreateInvoice", CREATE)
    send(kafka_bootstrap, names.commands, [record, follow])
    run_handler(Exploding())
    expected = 1 if code == "undecodable" else 2
    got = {r.command_id: r for r in wait_for_results(kafka_bootstrap, base.name, expected)}
    assert got[follow.command_id].status == "accepted"  # the partition went on
    letters = [json.loads(m.value()) for m in read_topic(kafka_bootstrap, names.dead_letters)]
    assert len(letters) == 1
    assert letters[0]["error"]["code"] == code
    assert letters[0]["source"]["topic"] == names.commands and letters[0]["source"]["offset"] == 0
    if code != "undecodable":
        failed = next(r for r in got.values() if r.command_id != follow.command_id)
        assert failed.status == "failed" and failed.code == code and failed.reason
    else:
        assert letters[0]["value_encoding"] == "base64"
