"""Projector benchmark: snapshot records pre-produced to a topic, projected into SQLite and PostgreSQL.

``InvoiceList`` (one row per invoice) over a few hundred thousand snapshots: each invoice three times,
at versions 1, 2 and 3, so two thirds of the rows are updates of existing rows. The clock runs from the
projector's first assignment until the positions stored in the database reach the end of the topic.
Prints one figure per line and never fails on a time.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from datetime import date
from decimal import Decimal
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from prometheus_client import REGISTRY

from bench.support import broker, figure, load, new_aggregate, produce_all
from foldline.aggregate import AggregateSpec
from foldline.examples.invoices import Invoice, Invoices, LineItem
from foldline.examples.invoices.domain import Status
from foldline.examples.invoices.views import InvoiceList
from foldline.projection import ProjectionSpec, open_store
from foldline.projection.wiring import build_projector
from foldline.records import SnapshotRecord
from foldline.service import quiet_gc
from foldline.settings import KafkaSettings, ProjectorSettings
from foldline.topics import TopicNames

INVOICES = int(os.environ.get("FOLDLINE_BENCH_PROJECTION_INVOICES", "100000"))
VERSIONS = 3
PARTITIONS = 6


def snapshots(invoices: int) -> list[tuple[bytes, bytes]]:
    """Realistic snapshot values: a state with line items and a few recent command results."""
    spec = AggregateSpec(Invoices())
    out = []
    lines = [LineItem(f"l{n}", "Consulting, senior engineer", 3, Decimal("120.00")) for n in range(3)]
    for version in range(1, VERSIONS + 1):
        status: Status = ("draft", "draft", "sent")[version - 1]
        for i in range(invoices):
            aid = f"inv-{i}"
            state = Invoice(
                status, f"customer-{i % 500}", "EUR", date(2026, 11, 1), date(2026, 12, 1), tuple(lines[:version])
            )
            recent = tuple(
                {"command_id": uuid.uuid4().hex, "status": "accepted", "version": v} for v in range(1, version + 1)
            )
            record = SnapshotRecord(aid, version, spec.encode_state(state), 1, recent)  # type: ignore[arg-type]
            out.append((aid.encode(), record.to_bytes()))
    return out


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-ends", "isolation.level": "read_committed"})
    try:
        return {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1] for p in range(PARTITIONS)
        }
    finally:
        c.close()


def rows_written(aggregate: str, view: str) -> float:
    value = REGISTRY.get_sample_value(
        "foldline_projection_rows_written_total", {"aggregate": aggregate, "projection": view}
    )
    return value or 0.0


def project(bootstrap: str, aggregate: str, url: str, ends: dict[int, int]) -> tuple[float, int]:
    """Seconds from the first assignment until every position reached the end; row changes written."""
    spec = ProjectionSpec(InvoiceList(aggregate_name=aggregate))
    before = rows_written(aggregate, spec.view)
    settings = ProjectorSettings(kafka=KafkaSettings(bootstrap_servers=bootstrap), database=url, max_batch=5000)
    projector = build_projector(spec, settings)
    thread = threading.Thread(target=projector.run, daemon=True)
    thread.start()
    while not projector.assigned:
        time.sleep(0.01)
    started = time.perf_counter()
    store = open_store(url)
    try:
        while True:
            positions = store.positions(spec.view, spec.revision, spec.topic)
            if all(positions.get(p, 0) >= end for p, end in ends.items()):
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        rows = int(rows_written(aggregate, spec.view) - before)
    finally:
        projector.stop()
        thread.join(60)
        store.close()
    return elapsed, rows


def main() -> None:
    from foldline.dev.postgres import DevPostgres

    bootstrap = broker()
    dsn = DevPostgres().start()
    aggregate = new_aggregate(bootstrap, PARTITIONS, prefix="bench-proj")
    topic = TopicNames(aggregate).snapshots
    records = snapshots(INVOICES)
    seconds = produce_all(bootstrap, topic, records, **{"linger.ms": 10, "compression.type": "lz4"})
    ends = end_offsets(bootstrap, topic)
    total = sum(ends.values())
    size = sum(len(v) for _, v in records) / len(records)
    figure("projection: snapshots pre-produced", total, "records", f"{size:.0f} B each, {seconds:.1f} s to produce")
    print(f"# machine: {load()}", flush=True)
    quiet_gc()  # the collector as `foldline projector` runs it (foldline.service.serve_when_built)
    with tempfile.TemporaryDirectory() as tmp:
        elapsed, rows = project(bootstrap, aggregate, f"sqlite:///{Path(tmp) / 'views.db'}", ends)
    figure(
        "projection: InvoiceList into SQLite",
        rows / elapsed,
        "rows/s",
        f"{rows} rows from {total / elapsed:,.0f} records/s in {elapsed:.1f} s; {load()}",
    )
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    try:
        elapsed, rows = project(bootstrap, aggregate, f"{dsn}?schema={schema}", ends)
        figure(
            "projection: InvoiceList into PostgreSQL",
            rows / elapsed,
            "rows/s",
            f"{rows} rows from {total / elapsed:,.0f} records/s in {elapsed:.1f} s; {load()}",
        )
    finally:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


if __name__ == "__main__":
    main()
