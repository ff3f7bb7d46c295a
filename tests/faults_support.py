"""What the fault tests share: a broker of their own to stop, probes, polling, and the exactly-once checks.

A fault test stops or kills services, so it never touches the session's broker or database: it runs its
own on free ports (the cache keeps one data dir per port) and stops it at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from foldline.aggregate import AggregateSpec
from foldline.dev.kafka import DevKafka
from foldline.examples.invoices import Invoices
from foldline.records import CommandEnvelope, EventRecord
from foldline.topics import TopicNames, aggregate_topics, ensure_topics
from tests.conftest import aggregate_path
from tests.kafka_support import command, read_topic, results

REPO = Path(__file__).resolve().parent.parent
VIEWS = "foldline.examples.invoices.views"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_pair() -> int:
    """A port whose successor is free too (the broker's listener and its controller)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports")


@contextmanager
def own_broker() -> Iterator[DevKafka]:
    """A fresh dev broker on free ports, for this test alone; stopped (and its data dropped) afterwards."""
    broker = DevKafka(port=free_port_pair())
    broker.start(timeout=180.0)
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(broker.home, ignore_errors=True)  # one dir per random port: do not pile them up


def make_aggregate(bootstrap: str, name: str, partitions: int = 3) -> type[Invoices]:
    cls = type(f"Invoices_{name.replace('-', '_')}", (Invoices,), {"name": name})
    ensure_topics(AdminClient({"bootstrap.servers": bootstrap}), aggregate_topics(name, partitions))
    return cls


def get(port: int, path: str) -> int:
    """The status of GET ``path`` on a service's health port; 0 when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(step)


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    full = {
        **os.environ,
        "FOLDLINE_LOG_FORMAT": "json",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        **env,
    }
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "foldline.cli", *args], env=full, stdout=out, stderr=out)


def handler(
    bootstrap: str, cls: type[Invoices], name: str, tmp: Path, port: int = 0, instance: str | None = None
) -> subprocess.Popen[bytes]:
    env = {
        "FOLDLINE_KAFKA_BOOTSTRAP": bootstrap,
        "FOLDLINE_STATE_DIR": str(tmp / f"state-{name}"),
        "FOLDLINE_INSTANCE_ID": instance or name,
        "FOLDLINE_HTTP_PORT": str(port),
        "FOLDLINE_COMMIT_INTERVAL_MS": "20",
        "FOLDLINE_WORKERS": "1",  # one engine per instance id, as these tests assert (see test_handler_workers.py)
    }
    return spawn(["command-handler", "--aggregate", aggregate_path(cls)], env, tmp / f"handler-{name}.log")


def projector(
    bootstrap: str, cls: type[Invoices], view: str, database: str, name: str, tmp: Path, port: int = 0
) -> subprocess.Popen[bytes]:
    env = {
        "FOLDLINE_KAFKA_BOOTSTRAP": bootstrap,
        "FOLDLINE_HTTP_PORT": str(port),
        "FOLDLINE_INSTANCE_ID": name,
        "FOLDLINE_PROJECTION_MAX_BATCH": "150",
        "FOLDLINE_PROJECTION_BATCH_WAIT_MS": "20",
    }
    args = ["projector", "--projection", f"{VIEWS}:{view}", "--database", database, "--aggregate-name", cls.name]
    return spawn(args, env, tmp / f"projector-{name}.log")


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


class Sender(threading.Thread):
    """Produce commands in small chunks, one chunk every ``pause`` seconds, until all are handed to the
    client. While the broker is away the idempotent producer keeps them and delivers them when it returns."""

    def __init__(self, bootstrap: str, topic: str, cmds: list[CommandEnvelope], chunk: int, pause: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.cmds, self.chunk, self.pause = bootstrap, topic, cmds, chunk, pause
        self.handed = 0
        self.failed: list[str] = []

    def run(self) -> None:
        p = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "partitioner": "murmur2_random",
                "linger.ms": 5,
                "enable.idempotence": True,
                "message.timeout.ms": 600_000,  # outlives any outage these tests stage
                "log_level": 2,  # not a "connection refused" line per retry while the broker is away
            }
        )

        def delivered(error: Any, _msg: Any) -> None:
            if error is not None:
                self.failed.append(str(error))

        for i in range(0, len(self.cmds), self.chunk):
            for envelope in self.cmds[i : i + self.chunk]:
                p.produce(self.topic, envelope.to_bytes(), envelope.aggregate_id.encode(), on_delivery=delivered)
            self.handed = min(len(self.cmds), i + self.chunk)
            p.poll(0)
            time.sleep(self.pause)
        remaining = p.flush(600)
        if remaining:
            self.failed.append(f"{remaining} commands not delivered")


def assert_exactly_once(bootstrap: str, cls: type[Invoices], cmds: list[CommandEnvelope]) -> dict[str, Any]:
    """Every command exactly one result, all accepted; events without version gaps, as many as accepted.
    Returns the fold of the events per aggregate (what every view row must equal)."""
    got = results(bootstrap, cls.name)
    per_command = Counter(r.command_id for r in got)
    assert set(per_command) == {c.command_id for c in cmds}, "a command has no result"
    duplicated = {k: v for k, v in per_command.items() if v != 1}
    assert not duplicated, f"{len(duplicated)} commands have more than one result"
    statuses = Counter(r.status for r in got)
    assert statuses == Counter({"accepted": len(cmds)}), statuses
    records: dict[str, list[EventRecord]] = defaultdict(list)
    for msg in read_topic(bootstrap, TopicNames(cls.name).events):
        record = EventRecord.from_bytes(msg.value())
        records[record.aggregate_id].append(record)
    assert sum(len(v) for v in records.values()) == sum(len(r.events) for r in got)  # none lost or twice
    spec = AggregateSpec(cls())
    folded = {}
    for aggregate_id, recs in records.items():
        assert [r.version for r in recs] == list(range(1, len(recs) + 1)), f"{aggregate_id}: version gaps"
        events = [spec.decode_event(r.type, r.schema_version, r.payload) for r in recs]
        folded[aggregate_id] = (spec.aggregate.fold(events), len(recs))
    return folded


def assert_invoice_list(url: str, folded: dict[str, Any]) -> None:
    """Every InvoiceList row equals the fold of its invoice's events; no row missing or extra."""
    from foldline.projection import open_store

    target = open_store(url)
    rows: list[dict[str, Any]] = []
    try:
        while batch := target.read_rows("invoice-list", filters={}, limit=500, offset=len(rows)):
            rows.extend(batch)
    finally:
        target.close()
    expected = {
        aid: (state.status, str(state.total), str(state.balance), version)
        for aid, (state, version) in folded.items()
        if state.status not in ("none", "deleted")
    }
    got = {r["id"]: (r["status"], r["total"], r["balance"], r["aggregate_version"]) for r in rows}
    assert len(rows) == len(got)
    assert got == expected


def assert_customer_totals(url: str, folded: dict[str, Any]) -> None:
    """CustomerTotals counts every event once: per customer, its invoices and their events."""
    from foldline.projection import open_store

    target = open_store(url)
    try:
        rows = target.read_rows("customer-totals", filters={}, limit=500)
    finally:
        target.close()
    expected: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))
    for state, version in folded.values():
        invoices, events = expected[state.customer]
        expected[state.customer] = (invoices + 1, events + version)
    assert {r["customer"]: (int(r["invoices"]), int(r["events"])) for r in rows} == dict(expected)


def view_matches(check: Callable[[], None]) -> Callable[[], bool]:
    """A predicate for ``wait_until``: the view check passes (a view still catching up fails it)."""

    def ok() -> bool:
        try:
            check()
        except AssertionError:
            return False
        return True

    return ok


def log_events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}


def workload(prefix: str, aggregates: int, per_aggregate: int) -> list[CommandEnvelope]:
    """Creates, then line items, interleaved across aggregates as real traffic is; every one is accepted."""
    ids = [f"{prefix}-{i}" for i in range(aggregates)]
    out = [command(a, "CreateInvoice", {**CREATE, "customer": f"customer-{i % 7}"}) for i, a in enumerate(ids)]
    for n in range(per_aggregate - 1):
        item = {"line_id": f"l{n}", "description": "work", "quantity": 1, "unit_price": "1.50"}
        out += [command(a, "AddLineItem", item) for a in ids]
    return out


def steady_workload(prefix: str, aggregates: int, total: int) -> list[CommandEnvelope]:
    """A steady state for a soak: a fixed set of invoices, then a line item added and removed again, so
    no state grows with time (what grows memory then is the process, not the data)."""
    ids = [f"{prefix}-{i}" for i in range(aggregates)]
    out = [command(a, "CreateInvoice", {**CREATE, "customer": f"customer-{i % 7}"}) for i, a in enumerate(ids)]
    n = 0
    while len(out) < total:
        item = {"line_id": f"l{n}", "description": "work", "quantity": 1, "unit_price": "1.50"}
        out += [command(a, "AddLineItem", item) for a in ids]
        out += [command(a, "RemoveLineItem", {"line_id": f"l{n}"}) for a in ids]
        n += 1
    return out


def aggregate_name(prefix: str) -> str:
    import uuid

    return f"{prefix}-{uuid.uuid4().hex[:8]}"
