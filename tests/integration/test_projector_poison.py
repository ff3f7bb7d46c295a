"""Values PostgreSQL refuses never stop a projector (issue 10, defect 4).

Such values are refused at the command boundary (a NUL in text, a decimal like ``1e999999``: a failed
result with ``invalid_payload``), and a record that still carries one (written before that check, or by
another producer) is passed over by the projector: a ``foldline_skipped`` row with the cause, the
skipped metric, and the records after it projected as usual.
"""

from __future__ import annotations

import threading
import time
from datetime import date
from decimal import Decimal

import psycopg
import pytest
from prometheus_client import REGISTRY

from foldline.aggregate import AggregateSpec
from foldline.examples.invoices.domain import Invoice, LineItem
from foldline.projection import load_projection, open_target
from foldline.projection.wiring import build_projector
from foldline.records import SnapshotRecord, Status
from foldline.settings import KafkaSettings, ProjectorSettings
from foldline.topics import TopicNames
from tests.kafka_support import command, send, wait_for_results

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

VIEWS = "foldline.examples.invoices.views"
CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}


def test_commands_with_values_no_view_can_hold_fail_at_the_boundary(kafka_bootstrap, invoices_aggregate, run_handler):
    """Straight onto the commands topic, as kcat would send them: each gets a failed result."""
    cls = invoices_aggregate(partitions=1)
    run_handler(cls(), commit_interval_ms=5)
    names = TopicNames(cls.name)
    line = {"line_id": "a", "description": "d", "quantity": 1, "unit_price": "1.00"}
    bad = [
        command("inv-nul", "CreateInvoice", {**CREATE, "customer": "A\x00B"}),
        command("inv-ok", "CreateInvoice", CREATE),
        command("inv-ok", "AddLineItem", {**line, "unit_price": "1e999999"}),
        command("inv-ok", "AddLineItem", {**line, "description": "x\x00y"}),
        command("inv-ok", "AddLineItem", {**line, "quantity": 2**63}),
        command("inv-ok", "AddLineItem", line),
    ]
    send(kafka_bootstrap, names.commands, bad)
    by_id = {r.command_id: r for r in wait_for_results(kafka_bootstrap, cls.name, len(bad))}
    outcomes = [(by_id[c.command_id].status, by_id[c.command_id].code) for c in bad]
    failed = (Status.FAILED, "invalid_payload")
    assert outcomes == [failed, (Status.ACCEPTED, None), failed, failed, failed, (Status.ACCEPTED, None)]
    assert "NUL" in (by_id[bad[0].command_id].reason or "")
    assert "out of range" in (by_id[bad[2].command_id].reason or "")


def skipped_metric(view: str) -> float:
    value = REGISTRY.get_sample_value(
        "foldline_projection_records_skipped_total",
        {"aggregate": view.split("|")[0], "projection": view.split("|")[1], "reason": "refused_by_database"},
    )
    return value or 0.0


def test_records_postgres_refuses_are_skipped_and_counted(kafka_bootstrap, invoices_aggregate, postgres_url):
    cls = invoices_aggregate(partitions=1)
    spec = AggregateSpec(cls())
    names = TopicNames(cls.name)

    def snapshot(aggregate_id: str, invoice: Invoice, version: int = 2) -> tuple[bytes, bytes]:
        record = SnapshotRecord(aggregate_id, version, spec.encode_state(invoice))  # type: ignore[arg-type]
        return aggregate_id.encode(), record.to_bytes()

    base = Invoice(
        status="draft", customer="ACME", currency="EUR", issue_date=date(2026, 11, 1), due_date=date(2026, 12, 1)
    )
    good_line = LineItem("a", "Consulting", 2, Decimal("10.00"))
    records = [
        snapshot("inv-good-1", base.__class__(**{**base.__dict__, "lines": (good_line,)})),
        snapshot("inv-nul", base.__class__(**{**base.__dict__, "customer": "A\x00B"})),  # refused by invoice-list
        snapshot(
            "inv-nul-line",
            base.__class__(**{**base.__dict__, "lines": (LineItem("a", "x\x00y", 1, Decimal("1.00")),)}),
        ),  # refused by invoice-line-items
        snapshot(
            "inv-huge",
            base.__class__(**{**base.__dict__, "lines": (LineItem("a", "d", 1, Decimal("1e999999")),)}),
        ),  # numeric overflow in invoice-line-items; invoice-list's project fails on its total
        snapshot("inv-good-2", base.__class__(**{**base.__dict__, "lines": (good_line,)})),
    ]
    send(kafka_bootstrap, names.snapshots, records)

    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    settings = ProjectorSettings(kafka=kafka, database=postgres_url, batch_wait_ms=20)
    running = []
    before = {}
    for name in ("InvoiceList", "InvoiceLineItems"):
        projection = load_projection(f"{VIEWS}:{name}", aggregate_name=cls.name)
        before[projection.view] = skipped_metric(f"{cls.name}|{projection.view}")
        projector = build_projector(projection, settings)
        thread = threading.Thread(target=projector.run, daemon=True)
        thread.start()
        running.append((projector, thread))
    try:
        deadline = time.monotonic() + 60
        while not all(p.positions.get(0, 0) >= len(records) for p, _ in running):
            assert time.monotonic() < deadline, [p.positions for p, _ in running]
            assert all(t.is_alive() for _, t in running), "a projector stopped on a refused record"
            time.sleep(0.1)
        assert all(t.is_alive() and p.state == "active" for p, t in running)
        reader = open_target(postgres_url)
        try:
            listed = {r["id"] for r in reader.read_rows("invoice-list", filters={}, limit=100)}
            lines = {r["invoice_id"] for r in reader.read_rows("invoice-line-items", filters={}, limit=100)}
        finally:
            reader.close()
        assert listed == {"inv-good-1", "inv-nul-line", "inv-good-2"}
        assert lines == {"inv-good-1", "inv-good-2"}  # inv-nul has no lines
        with psycopg.connect(postgres_url.split("?")[0]) as conn:
            schema = postgres_url.split("schema=")[1]
            rows = conn.execute(
                f'SELECT view, "offset", aggregate_id, version, reason, error FROM "{schema}".foldline_skipped '
                'ORDER BY view, "offset"'
            ).fetchall()
        skipped = {(view, offset, aid, reason) for view, offset, aid, _, reason, _ in rows}
        assert skipped == {
            ("invoice-list", 1, "inv-nul", "refused_by_database"),
            ("invoice-list", 3, "inv-huge", "project_failed"),
            ("invoice-line-items", 2, "inv-nul-line", "refused_by_database"),
            ("invoice-line-items", 3, "inv-huge", "refused_by_database"),
        }
        assert all(error for *_, error in rows)  # the cause, in words
        assert any("NUL" in error or "0x00" in error for view, _, _, _, _, error in rows if view == "invoice-list")
        assert skipped_metric(f"{cls.name}|invoice-list") - before["invoice-list"] == 1
        assert skipped_metric(f"{cls.name}|invoice-line-items") - before["invoice-line-items"] == 2
    finally:
        for projector, _ in running:
            projector.stop()
        for _, thread in running:
            thread.join(30)
