# ruff: noqa: E501 - the expected records are pinned as whole lines of bytes
"""The exact bytes the handler writes for a fixed script of commands: results, events, snapshots and dead
letters are a public contract, so any change of one byte (key order, spacing, a field) must fail here.

The expected bytes were recorded from the handler as it was before its per-command work was cut down
(commit b735f83); they are the contract, not whatever the code does today.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from foldline import AggregateSpec, CommandEnvelope
from foldline.examples.invoices import Invoices
from foldline.handler.task import Outcome, PartitionTask
from foldline.ids import AggregateId, CommandId
from foldline.store.base import open_state_store

NOW = "2026-11-26T00:00:00Z"
#: A dead letter is stamped with the wall clock, not the task's: masked.
_RECORDED_AT = re.compile(rb'"recorded_at":"[^"]*"')
CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}


def line(n: int, price: str = "5.00") -> dict[str, object]:
    return {"line_id": f"l{n}", "description": "Consulting \u00e9t\u00e9", "quantity": 2, "unit_price": price}


def written(outcome: Outcome) -> Iterator[tuple[str, bytes]]:
    """The records the engine writes for one outcome, in its order (the dead letter's timestamp masked)."""
    if outcome.result is not None:
        yield "result", outcome.result.to_bytes()
    assert [event.to_bytes() for event in outcome.events] == outcome.event_bytes
    for raw in outcome.event_bytes:
        yield "event", raw
    if outcome.dead_letter is not None:
        masked, n = _RECORDED_AT.subn(b'"recorded_at":"*"', outcome.dead_letter)
        assert n == 1
        yield "dead_letter", masked


def task_at(directory: Path, window: int = 3) -> PartitionTask:
    return PartitionTask(
        AggregateSpec(Invoices()),
        0,
        open_state_store("sqlite", directory),
        cache_size=100,
        dedup_window=window,
        topic="invoices.commands",
        clock=lambda: NOW,
    )


def script(directory: Path) -> list[tuple[str, bytes]]:
    """Every record of a script that touches each kind of outcome, across two batches and a restart."""
    out: list[tuple[str, bytes]] = []
    task = task_at(directory / "p0")

    def send(aggregate_id: str, type_: str, payload: dict[str, Any], cid: str, expected: int | None = None) -> None:
        value = CommandEnvelope(cid, aggregate_id, type_, payload, expected, issued_at=NOW).to_bytes()  # type: ignore[arg-type]
        out.extend(written(task.handle(aggregate_id.encode(), value, len(out))))

    def commit() -> None:
        snaps = task.snapshots()
        out.extend(("snapshot", value) for _, value in snaps)
        task.committed(snaps, len(out))

    task.begin_batch()
    send("i1", "CreateInvoice", CREATE, "c1")
    send("i1", "AddLineItem", line(1), "c2")
    send("i1", "AddLineItem", line(1), "c3")  # rejected: the line exists
    send("i1", "AddLineItem", line(2, "0.10"), "c4", expected=2)
    send("i1", "AddLineItem", line(3), "c5", expected=0)  # conflict
    send("i1", "AddLineItem", line(2, "0.10"), "c4", expected=2)  # a duplicate: its first result again
    send("i1", "CreateInvoice", CREATE, "c1")  # out of the window of 3: decided again, rejected
    send("i2", "AddLineItem", line(1), "c6")  # rejected: no invoice
    send("i2", "CreateInvoice", {**CREATE, "currency": "euro"}, "c7")  # invalid payload: dead letter
    send("i2", "Nope", {}, "c8")  # unknown type
    commit()
    task.begin_batch()
    send("i1", "SendInvoice", {}, "c9")
    send("i1", "RecordPayment", {"payment_id": "p1", "amount": "10.20", "currency": "EUR"}, "c10")
    commit()
    out.extend(written(task.handle(b"i1", b"{not json", 99)))
    other = CommandEnvelope(CommandId("c11"), AggregateId("i1"), "SendInvoice", {}, issued_at=NOW)
    out.extend(written(task.handle(b"other", other.to_bytes(), 100)))  # a key that is not its aggregate id
    task.close()
    # A restart reads the snapshots back: the duplicate and the next command come from the decoded snapshot.
    task = task_at(directory / "p0")
    task.begin_batch()
    send("i1", "RecordPayment", {"payment_id": "p1", "amount": "10.20", "currency": "EUR"}, "c10")
    send("i1", "DeleteInvoice", {"reason": "x"}, "c12")
    commit()
    task.close()
    return out


def test_the_bytes_of_every_record_are_pinned(tmp_path):
    records = script(tmp_path)
    assert [name for name, _ in records] == [kind for kind, _ in EXPECTED]
    for (name, raw), (_, expected) in zip(records, EXPECTED, strict=True):
        assert raw == expected, name


def test_a_longer_run_hashes_to_the_same_bytes(tmp_path):
    """Many commands on many aggregates, past the dedup window: pinned by a digest of every record."""
    task = task_at(tmp_path / "p0", window=16)
    digest = hashlib.sha256()
    for batch in range(5):
        task.begin_batch()
        for n in range(200):
            aggregate_id = f"inv-{n % 37}"
            kind, payload = ("CreateInvoice", CREATE) if batch == 0 and n < 37 else ("AddLineItem", line(n % 23))
            value = CommandEnvelope(f"c{batch}-{n % 150}", aggregate_id, kind, payload, issued_at=NOW).to_bytes()  # type: ignore[arg-type]
            for _, raw in written(task.handle(aggregate_id.encode(), value, n)):
                digest.update(raw)
        snaps = task.snapshots()
        for _, raw in snaps:
            digest.update(raw)
        task.committed(snaps, batch)
    task.close()
    assert digest.hexdigest() == LONG_RUN_SHA256


EXPECTED: list[tuple[str, bytes]] = [
    (
        "result",
        b'{"command_id":"c1","aggregate_id":"i1","status":"accepted","version":1,"events":["InvoiceCreated"],"reason":null,"code":null,"duplicate":false,"recorded_at":"2026-11-26T00:00:00Z","schema_version":1}',
    ),
    (
        "event",
        b'{"aggregate_id":"i1","type":"InvoiceCreated","schema_version":1,"version":1,"command_id":"c1","recorded_at":"2026-11-26T00:00:00Z","payload":{"customer":"ACME","currency":"EUR","issue_date":"2026-11-01","due_date":"2026-12-01"}}',
    ),
    (
        "result",
        b'{"command_id":"c2","aggregate_id":"i1","status":"accepted","version":2,"events":["LineItemAdded"],"reason":null,"code":null,"duplicate":false,"recorded_at":"2026-11-26T00:00:00Z","schema_version":1}',
    ),
    (
        "event",
        b'{"aggregate_id":"i1","type":"LineItemAdded","schema_version":1,"version":2,"command_id":"c2","recorded_at":"2026-11-26T00:00:00Z","payload":{"line_id":"l1","description":"Consulting \xc3\xa9t\xc3\xa9","quantity":2,"unit_price":"5.00"}}',
    ),
    (
        "result",
        b'{"command_id":"c3","aggregate_id":"i1","status":"rejected","version":2,"events":[],"reason":"line item \'l1\' already exists","code":"rejected","duplicate":false,"recorded_at":"2026-11-26T00:00:00Z","schema_version":1}',
    ),
    (
        "result",
        b'{"command_id":"c4","aggregate_id":"i1","status":"accepted","version":3,"events":["LineItemAdded"],"reason":null,"code":null,"duplicate":false,"recorded_at":"2026-11-26T00:00:00Z","schema_version":1}',
    ),
    (
        "event",
        b'{"aggregate_id":"i1","type":"LineItemAdded","schema_version":1,"version":3,"command_id":"c4","recorded_at":"2026-11-26T00:00:00Z","payload":{"line_id":"l2","description":"Consulting \xc3\xa9t\xc3\xa9","quantity":2,"unit_price":"0.10"}}',
    ),
    (
        "result",
        b'{"command_id":"c5","aggregate_id":"i1","status":"conflict","version":3,"events":[],"reason":"expected version 0, but the aggregate is at version 3","code":"conflict","duplicate":false,"recorded_at":"2026-11-26T00:00:00Z","schema_version":1}',
    ),
    (
        "result",
        b'{"command_id":"c4","aggregate_id":"i1","status":"accepted","version":3,"events":["LineItemAdded"],"reason":null,"code":null,"duplicate":true,"recorded_at":"2026-11-26T00:00:00Z","schema_version":1}',
    ),
    (
        "result",
        b'{"command_id":"c1","aggregate_id":"i1","status":"rejected","version":3,"events":[],"reason":"the invoice already exists","code":"rejected","duplicate":false,"recorded_at":"2026-11-26T00:00:00Z","schema_version":1}',
    ),
    (
        "result",
        b'{"command_id":"c6","aggregate_id":"i2","status":"rejected","version":0,"events":[],"reason":"the invoice does not exist","code":"rejected","duplicate":false,"recorded_at":"2026-11-26T00:00:00Z","schema_version":1}',
    ),
    (
        "result",
        b'{"command_id":"c7","aggregate_id":"i2","status":"failed","version":0,"events":[],"reason":"payload: currency must be a three-letter ISO 4217 code such as EUR, got \'euro\'","code":"invalid_payload","duplicate":false,"recorded_at":"2026-11-26T00:00:00Z","schema_version":1}',
    ),
    (
        "dead_letter",
        b'{"source":{"topic":"invoices.commands","partition":0,"offset":11},"key":"i2","key_encoding":"utf-8","key_bytes":2,"value":"{\\"command_id\\":\\"c7\\",\\"aggregate_id\\":\\"i2\\",\\"type\\":\\"CreateInvoice\\",\\"schema_version\\":1,\\"expected_version\\":null,\\"payload\\":{\\"customer\\":\\"ACME\\",\\"currency\\":\\"euro\\",\\"issue_date\\":\\"2026-11-01\\",\\"due_date\\":\\"2026-12-01\\"},\\"issued_at\\":\\"2026-11-26T00:00:00Z\\"}","value_encoding":"utf-8","value_bytes":238,"truncated":false,"error":{"code":"invalid_payload","message":"payload: currency must be a three-letter ISO 4217 code such as EUR, got \'euro\'"},"recorded_at":"*","schema_version":1}',
    ),
    (
        "result",
        b'{"command_id":"c8","aggregate_id":"i2","status":"failed","version":0,"events":[],"reason":"invoices has no command type \'Nope\'; known: AddLineItem, CreateInvoice, DeleteInvoice, MarkOverdue, RecordPayment, RemoveLineItem, SendInvoice","code":"unknown_type","duplicate":false,"recorded_at":"2026-11-26T00:00:00Z","schema_version":1}',
    ),
    (
        "dead_letter",
        b'{"source":{"topic":"invoices.commands","partition":0,"offset":13},"key":"i2","key_encoding":"utf-8","key_bytes":2,"value":"{\\"command_id\\":\\"c8\\",\\"aggregate_id\\":\\"i2\\",\\"type\\":\\"Nope\\",\\"schema_version\\":1,\\"expected_version\\":null,\\"payload\\":{},\\"issued_at\\":\\"2026-11-26T00:00:00Z\\"}","value_encoding":"utf-8","value_bytes":144,"truncated":false,"error":{"code":"unknown_type","message":"invoices has no command type \'Nope\'; known: AddLineItem, CreateInvoice, DeleteInvoice, MarkOverdue, RecordPayment, RemoveLineItem, SendInvoice"},"recorded_at":"*","schema_version":1}',
    ),
    (
        "snapshot",
        b'{"aggregate_id":"i1","version":3,"schema_version":1,"updated_at":"2026-11-26T00:00:00Z","state":{"status":"draft","customer":"ACME","currency":"EUR","issue_date":"2026-11-01","due_date":"2026-12-01","lines":[{"line_id":"l1","description":"Consulting \xc3\xa9t\xc3\xa9","quantity":2,"unit_price":"5.00"},{"line_id":"l2","description":"Consulting \xc3\xa9t\xc3\xa9","quantity":2,"unit_price":"0.10"}],"paid":"0","payments":[]},"recent":[{"command_id":"c4","status":"accepted","version":3,"recorded_at":"2026-11-26T00:00:00Z","events":["LineItemAdded"]},{"command_id":"c5","status":"conflict","version":3,"recorded_at":"2026-11-26T00:00:00Z","reason":"expected version 0, but the aggregate is at version 3","code":"conflict"},{"command_id":"c1","status":"rejected","version":3,"recorded_at":"2026-11-26T00:00:00Z","reason":"the invoice already exists","code":"rejected"}]}',
    ),
    (
        "snapshot",
        b'{"aggregate_id":"i2","version":0,"schema_version":1,"updated_at":"2026-11-26T00:00:00Z","state":{"status":"none","customer":"","currency":"","issue_date":null,"due_date":null,"lines":[],"paid":"0","payments":[]},"recent":[{"command_id":"c6","status":"rejected","version":0,"recorded_at":"2026-11-26T00:00:00Z","reason":"the invoice does not exist","code":"rejected"},{"command_id":"c7","status":"failed","version":0,"recorded_at":"2026-11-26T00:00:00Z","reason":"payload: currency must be a three-letter ISO 4217 code such as EUR, got \'euro\'","code":"invalid_payload"},{"command_id":"c8","status":"failed","version":0,"recorded_at":"2026-11-26T00:00:00Z","reason":"invoices has no command type \'Nope\'; known: AddLineItem, CreateInvoice, DeleteInvoice, MarkOverdue, RecordPayment, RemoveLineItem, SendInvoice","code":"unknown_type"}]}',
    ),
    (
        "result",
        b'{"command_id":"c9","aggregate_id":"i1","status":"accepted","version":4,"events":["InvoiceSent"],"reason":null,"code":null,"duplicate":false,"recorded_at":"2026-11-26T00:00:00Z","schema_version":1}',
    ),
    (
        "event",
        b'{"aggregate_id":"i1","type":"InvoiceSent","schema_version":1,"version":4,"command_id":"c9","recorded_at":"2026-11-26T00:00:00Z","payload":{"total":"10.20"}}',
    ),
    (
        "result",
        b'{"command_id":"c10","aggregate_id":"i1","status":"accepted","version":6,"events":["PaymentRecorded","InvoicePaid"],"reason":null,"code":null,"duplicate":false,"recorded_at":"2026-11-26T00:00:00Z","schema_version":1}',
    ),
    (
        "event",
        b'{"aggregate_id":"i1","type":"PaymentRecorded","schema_version":1,"version":5,"command_id":"c10","recorded_at":"2026-11-26T00:00:00Z","payload":{"payment_id":"p1","amount":"10.20","balance":"0.00"}}',
    ),
    (
        "event",
        b'{"aggregate_id":"i1","type":"InvoicePaid","schema_version":1,"version":6,"command_id":"c10","recorded_at":"2026-11-26T00:00:00Z","payload":{"total":"10.20"}}',
    ),
    (
        "snapshot",
        b'{"aggregate_id":"i1","version":6,"schema_version":1,"updated_at":"2026-11-26T00:00:00Z","state":{"status":"paid","customer":"ACME","currency":"EUR","issue_date":"2026-11-01","due_date":"2026-12-01","lines":[{"line_id":"l1","description":"Consulting \xc3\xa9t\xc3\xa9","quantity":2,"unit_price":"5.00"},{"line_id":"l2","description":"Consulting \xc3\xa9t\xc3\xa9","quantity":2,"unit_price":"0.10"}],"paid":"10.20","payments":["p1"]},"recent":[{"command_id":"c1","status":"rejected","version":3,"recorded_at":"2026-11-26T00:00:00Z","reason":"the invoice already exists","code":"rejected"},{"command_id":"c9","status":"accepted","version":4,"recorded_at":"2026-11-26T00:00:00Z","events":["InvoiceSent"]},{"command_id":"c10","status":"accepted","version":6,"recorded_at":"2026-11-26T00:00:00Z","events":["PaymentRecorded","InvoicePaid"]}]}',
    ),
    (
        "dead_letter",
        b'{"source":{"topic":"invoices.commands","partition":0,"offset":99},"key":"i1","key_encoding":"utf-8","key_bytes":2,"value":"{not json","value_encoding":"utf-8","value_bytes":9,"truncated":false,"error":{"code":"undecodable","message":"the value is not valid UTF-8 JSON: unexpected character, expected a string key: line 1 column 2 (char 1)"},"recorded_at":"*","schema_version":1}',
    ),
    (
        "result",
        b'{"command_id":"c11","aggregate_id":"i1","status":"failed","version":0,"events":[],"reason":"the record key \'other\' differs from aggregate_id \'i1\': the key must be the aggregate id","code":"invalid_key","duplicate":false,"recorded_at":"2026-11-26T00:00:00Z","schema_version":1}',
    ),
    (
        "dead_letter",
        b'{"source":{"topic":"invoices.commands","partition":0,"offset":100},"key":"other","key_encoding":"utf-8","key_bytes":5,"value":"{\\"command_id\\":\\"c11\\",\\"aggregate_id\\":\\"i1\\",\\"type\\":\\"SendInvoice\\",\\"schema_version\\":1,\\"expected_version\\":null,\\"payload\\":{},\\"issued_at\\":\\"2026-11-26T00:00:00Z\\"}","value_encoding":"utf-8","value_bytes":152,"truncated":false,"error":{"code":"invalid_key","message":"the record key \'other\' differs from aggregate_id \'i1\': the key must be the aggregate id"},"recorded_at":"*","schema_version":1}',
    ),
    (
        "result",
        b'{"command_id":"c10","aggregate_id":"i1","status":"accepted","version":6,"events":["PaymentRecorded","InvoicePaid"],"reason":null,"code":null,"duplicate":true,"recorded_at":"2026-11-26T00:00:00Z","schema_version":1}',
    ),
    (
        "result",
        b'{"command_id":"c12","aggregate_id":"i1","status":"rejected","version":6,"events":[],"reason":"an invoice with recorded payments cannot be deleted","code":"rejected","duplicate":false,"recorded_at":"2026-11-26T00:00:00Z","schema_version":1}',
    ),
    (
        "snapshot",
        b'{"aggregate_id":"i1","version":6,"schema_version":1,"updated_at":"2026-11-26T00:00:00Z","state":{"status":"paid","customer":"ACME","currency":"EUR","issue_date":"2026-11-01","due_date":"2026-12-01","lines":[{"line_id":"l1","description":"Consulting \xc3\xa9t\xc3\xa9","quantity":2,"unit_price":"5.00"},{"line_id":"l2","description":"Consulting \xc3\xa9t\xc3\xa9","quantity":2,"unit_price":"0.10"}],"paid":"10.20","payments":["p1"]},"recent":[{"command_id":"c9","status":"accepted","version":4,"recorded_at":"2026-11-26T00:00:00Z","events":["InvoiceSent"]},{"command_id":"c10","status":"accepted","version":6,"recorded_at":"2026-11-26T00:00:00Z","events":["PaymentRecorded","InvoicePaid"]},{"command_id":"c12","status":"rejected","version":6,"recorded_at":"2026-11-26T00:00:00Z","reason":"an invoice with recorded payments cannot be deleted","code":"rejected"}]}',
    ),
]
LONG_RUN_SHA256 = "191b6dd8fa9bfe7216c048162a8007fe2d6245f275ff4b6d596a11daaf90e2b9"
