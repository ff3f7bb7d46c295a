"""Projectors as real processes, killed with SIGKILL mid-stream and restarted: the views come out exact.

The input is made by a real command handler from thousands of commands over hundreds of invoices.
``InvoiceList`` (from snapshots) goes to SQLite, ``CustomerTotals`` (from events, counting) to
PostgreSQL. At the end every list row equals the fold of its invoice's events, and every event was
counted exactly once per customer.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections import defaultdict
from decimal import Decimal

import pytest

from foldline.examples.invoices import InvoiceCreated, InvoiceDeleted, InvoiceSent, PaymentRecorded
from foldline.projection import open_store
from foldline.projection.status import ViewStatus, kafka_end_offsets, view_status
from foldline.settings import KafkaSettings
from foldline.topics import TopicNames
from tests.kafka_support import command, producer, wait_for_results

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]

VIEWS = "foldline.examples.invoices.views"
_CENT = Decimal("0.01")


def invoice_workload(invoices: int, prefix: str, seed: int = 11) -> list:
    """Each invoice's life in order; the invoices interleaved round-robin, as many clients would send."""
    rng = random.Random(seed)
    lives: list[list] = []
    for i in range(invoices):
        aid = f"{prefix}-{i}"
        cmds = [
            command(
                aid,
                "CreateInvoice",
                {
                    "customer": f"customer-{rng.randrange(15)}",
                    "currency": "EUR",
                    "issue_date": "2026-11-01",
                    "due_date": "2026-12-01",
                },
            )
        ]
        prices = {}
        for n in range(rng.randint(1, 4)):
            price = Decimal(rng.randint(100, 50_000)) / 100
            qty = rng.randint(1, 5)
            prices[f"l{n}"] = price * qty
            cmds.append(
                command(
                    aid,
                    "AddLineItem",
                    {"line_id": f"l{n}", "description": f"item {n}", "quantity": qty, "unit_price": str(price)},
                )
            )
        if len(prices) > 1 and rng.random() < 0.3:
            cmds.append(command(aid, "RemoveLineItem", {"line_id": "l0"}))
            del prices["l0"]
        roll = rng.random()
        if roll < 0.1:
            cmds.append(command(aid, "DeleteInvoice", {"reason": "duplicate"}))
        elif roll < 0.9:
            cmds.append(command(aid, "SendInvoice"))
            total = sum(prices.values(), Decimal(0)).quantize(_CENT)
            if roll < 0.2:
                cmds.append(command(aid, "DeleteInvoice", {"reason": "cancelled"}))
            elif roll < 0.7:
                part = (total / 3).quantize(_CENT)
                cmds.append(command(aid, "RecordPayment", {"payment_id": "p1", "amount": str(part), "currency": "EUR"}))
                if roll < 0.5:
                    cmds.append(
                        command(
                            aid, "RecordPayment", {"payment_id": "p2", "amount": str(total - part), "currency": "EUR"}
                        )
                    )
        lives.append(cmds)
    out: list = []
    for step in range(max(len(c) for c in lives)):
        out.extend(c[step] for c in lives if step < len(c))
    return out


class Stream(threading.Thread):
    """Send commands in chunks spread over ``seconds`` from one producer; ``halt`` stops it early."""

    def __init__(self, bootstrap: str, topic: str, cmds: list, seconds: float, chunk: int = 150) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.seconds = bootstrap, topic, seconds
        self.chunks = [cmds[i : i + chunk] for i in range(0, len(cmds), chunk)]
        self.sent = 0
        self.halt = threading.Event()

    def run(self) -> None:
        p = producer(self.bootstrap)
        for part in self.chunks:
            if self.halt.is_set():
                break
            for envelope in part:
                p.produce(self.topic, envelope.to_bytes(), envelope.aggregate_id.encode())
            p.poll(0)
            self.sent += len(part)
            time.sleep(self.seconds / len(self.chunks))
        assert p.flush(30) == 0


def stream(bootstrap: str, topic: str, cmds: list, seconds: float, chunk: int = 150) -> Stream:
    sender = Stream(bootstrap, topic, cmds, seconds, chunk)
    sender.start()
    return sender


def statuses(bootstrap: str, views: dict[str, str]) -> dict[str, ViewStatus]:
    out = {}
    with kafka_end_offsets(KafkaSettings(bootstrap_servers=bootstrap)) as ends:
        for view, url in views.items():
            store = open_store(url)
            try:
                out[view] = view_status(store, view, ends)
            finally:
                store.close()
    return out


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_projectors_killed_mid_stream_and_restarted_give_exact_views(
    kafka_bootstrap, invoices_aggregate, run_handler, start_projector, invoice_history, postgres_url, tmp_path
):
    cls = invoices_aggregate(partitions=3)
    names = TopicNames(cls.name)
    sqlite_url = f"sqlite:///{tmp_path / 'views.db'}"
    databases = {"invoice-list": sqlite_url, "customer-totals": postgres_url}
    cmds = invoice_workload(invoices=600, prefix="k")
    assert len(cmds) > 3000
    run_handler(cls())
    env = {"FOLDLINE_PROJECTION_MAX_BATCH": "150", "FOLDLINE_PROJECTION_BATCH_WAIT_MS": "20"}

    def start_both(round_: int) -> list:
        return [
            start_projector(
                f"{VIEWS}:InvoiceList", sqlite_url, aggregate_name=cls.name, name=f"list-{round_}", extra_env=env
            ),
            start_projector(
                f"{VIEWS}:CustomerTotals", postgres_url, aggregate_name=cls.name, name=f"totals-{round_}", extra_env=env
            ),
        ]

    def progressed(minimum: int) -> bool:
        try:
            got = statuses(kafka_bootstrap, databases)
        except Exception:  # the views are not registered yet
            return False
        return all(sum(s.revisions[0].positions.values()) >= minimum for s in got.values())

    procs = start_both(0)
    sender = stream(kafka_bootstrap, names.commands, cmds, seconds=20)
    behind_at_kill = []

    def running(round_: int) -> bool:
        """Both projectors of this round have their partitions (a fast earlier round may already have met
        the next progress target: killing them before they started would test nothing)."""
        return all(
            '"partitions assigned"' in (tmp_path / f"projector-{view}-{round_}.log").read_text()
            for view in ("list", "totals")
        )

    for round_ in (1, 2):
        wait_until(lambda r=round_ - 1: running(r), 120, f"round {round_ - 1} assigned")
        wait_until(lambda r=round_: progressed(300 * r), 60, f"progress before kill {round_}")
        assert sender.is_alive(), "the commands were all sent before the kill: make the stream longer"
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        time.sleep(1)  # the stream goes on while they are dead
        behind_at_kill.append({v: s.lag for v, s in statuses(kafka_bootstrap, databases).items()})
        procs = start_both(round_)
    sender.join()
    wait_for_results(kafka_bootstrap, cls.name, len(cmds), timeout=120)
    wait_until(lambda: all(s.lag == 0 for s in statuses(kafka_bootstrap, databases).values()), 90, "catch up")
    assert all(proc.poll() is None for proc in procs), "a restarted projector died"
    assert all(lag for kill in behind_at_kill for lag in kill.values()), f"not killed mid-stream: {behind_at_kill}"

    for round_ in (1, 2):  # the restarted projectors resumed from the positions in their databases
        for view in ("list", "totals"):
            lines = [
                json.loads(line)
                for line in (tmp_path / f"projector-{view}-{round_}.log").read_text().splitlines()
                if line.startswith("{")
            ]
            assigned = [line["partitions"] for line in lines if line.get("event") == "partitions assigned"]
            assert assigned and any(int(o) > 0 for a in assigned for o in a.values()), (view, round_, assigned)
            assert not [line for line in lines if line.get("event") == "record skipped"]

    history = invoice_history(cls)
    assert len(history) == 600

    # InvoiceList: exactly the invoices that exist, each row the fold of its events.
    target = open_store(sqlite_url)
    rows: list[dict] = []
    while batch := target.read_rows("invoice-list", filters={}, limit=200, offset=len(rows)):
        rows.extend(batch)
    target.close()
    expected = {}
    for aid, (state, version, _) in history.items():
        if state.status not in ("none", "deleted"):
            expected[aid] = {
                "id": aid,
                "customer": state.customer,
                "status": state.status,
                "currency": "EUR",
                "total": str(state.total),
                "balance": str(state.balance),
                "issue_date": "2026-11-01",
                "due_date": "2026-12-01",
                "aggregate_id": aid,
                "aggregate_version": version,
            }
    assert {r["id"]: r for r in rows} == expected
    assert len(rows) == len(expected) and {s for s in (r["status"] for r in rows)} >= {"draft", "sent", "paid"}

    # CustomerTotals: every event counted exactly once.
    totals: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for _aid, (_state, _version, events) in history.items():
        customer = events[0].customer
        t = totals[customer]
        t["events"] += len(events)
        sent = Decimal(0)
        for event in events:
            if isinstance(event, InvoiceCreated):
                t["invoices"] += 1
            elif isinstance(event, InvoiceSent):
                sent = event.total
                t["invoiced"] += sent
            elif isinstance(event, PaymentRecorded):
                t["paid"] += event.amount
            elif isinstance(event, InvoiceDeleted):
                t["invoices"] -= 1
                t["invoiced"] -= sent
    target = open_store(postgres_url)
    got = target.read_rows("customer-totals", filters={}, limit=100)
    target.close()
    assert {r["customer"]: {k: Decimal(r[k]) for k in ("invoices", "invoiced", "paid", "events")} for r in got} == {
        c: {k: t[k] for k in ("invoices", "invoiced", "paid", "events")} for c, t in totals.items()
    }
    assert sum(Decimal(r["events"]) for r in got) == sum(v for _, v, _ in history.values())
