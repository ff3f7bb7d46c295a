"""PostgreSQL stopped and started again under two running projectors (snapshots and events sources).

The projectors stay up, say not-ready on /readyz while the database is away and ready after it returned;
the batches that failed are read again. At the end the rows equal the fold of the events: nothing lost,
nothing applied twice (``customer-totals`` counts every event, so a batch applied twice would show).
"""

from __future__ import annotations

import shutil
import time

import pytest

from foldline.dev.postgres import DevPostgres
from foldline.topics import TopicNames
from tests.faults_support import (
    Sender,
    aggregate_name,
    assert_customer_totals,
    assert_exactly_once,
    assert_invoice_list,
    free_port,
    get,
    handler,
    log_events,
    make_aggregate,
    projector,
    stop,
    view_matches,
    wait_until,
    workload,
)
from tests.kafka_support import results

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def test_postgres_outage_projectors_wait_and_resume(kafka_bootstrap, tmp_path):
    server = DevPostgres(port=free_port())  # its own server: stopping the shared one would hurt other tests
    database = server.start(timeout=120.0) + "?schema=outage"
    cls = make_aggregate(kafka_bootstrap, aggregate_name("pgout"), partitions=3)
    ports = {"list": free_port(), "totals": free_port()}
    procs = [handler(kafka_bootstrap, cls, "h", tmp_path)]
    procs += [
        projector(kafka_bootstrap, cls, "InvoiceList", database, "list", tmp_path, ports["list"]),
        projector(kafka_bootstrap, cls, "CustomerTotals", database, "totals", tmp_path, ports["totals"]),
    ]
    try:
        wait_until(lambda: all(get(p, "/readyz") == 200 for p in ports.values()), 180, "projectors ready")
        cmds = workload("pg", aggregates=60, per_aggregate=12)  # 720 commands
        sender = Sender(kafka_bootstrap, TopicNames(cls.name).commands, cmds, chunk=12, pause=0.1)
        sender.start()
        wait_until(lambda: sender.handed >= 200, 120, "traffic before the outage")
        server.stop()  # a fast shutdown: open sessions are cut, batches in flight fail
        down = time.monotonic()
        wait_until(lambda: all(get(p, "/readyz") == 503 for p in ports.values()), 120, "not-ready during the outage")
        sender.join(600)  # the handler goes on meanwhile: the views fall behind
        assert all(p.poll() is None for p in procs), "a process exited during the outage"
        assert all(get(p, "/readyz") == 503 for p in ports.values())
        server.start(timeout=120.0)
        back = time.monotonic()
        wait_until(lambda: all(get(p, "/readyz") == 200 for p in ports.values()), 180, "ready after the outage")
        print(f"\noutage {back - down:.1f}s; ready {time.monotonic() - back:.1f}s after the database")
        assert not sender.failed, sender.failed
        wait_until(lambda: len({r.command_id for r in results(kafka_bootstrap, cls.name)}) >= len(cmds), 300, "results")
        folded = assert_exactly_once(kafka_bootstrap, cls, cmds)
        wait_until(view_matches(lambda: assert_invoice_list(database, folded)), 180, "invoice-list = fold", 1.0)
        wait_until(view_matches(lambda: assert_customer_totals(database, folded)), 180, "customer-totals = fold", 1.0)
        assert all(p.poll() is None for p in procs), "a process exited"
    finally:
        stop(procs)
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
    for name in ("list", "totals"):
        events = [e.get("event") for e in log_events(tmp_path / f"projector-{name}.log")]
        assert "projection database unavailable" in events and "projection database available again" in events
        assert "record skipped" not in events, name


def test_a_projector_started_while_its_database_is_away_waits_for_it(kafka_bootstrap, tmp_path):
    """Started against a stopped server, the projector neither exits nor serves: live, not ready, trying again
    with a backoff; once the server is up it builds its view like any other start."""
    server = DevPostgres(port=free_port())
    database = server.start(timeout=120.0) + "?schema=late"
    server.stop()
    cls = make_aggregate(kafka_bootstrap, aggregate_name("pglate"), partitions=2)
    port = free_port()
    procs = [
        handler(kafka_bootstrap, cls, "h", tmp_path),
        projector(kafka_bootstrap, cls, "InvoiceList", database, "late", tmp_path, port),
    ]
    log = tmp_path / "projector-late.log"
    try:
        waiting = lambda: "cannot start yet; trying again" in {e.get("event") for e in log_events(log)}  # noqa: E731
        wait_until(lambda: log.exists() and waiting(), 180, "the projector waiting for its database")
        assert procs[1].poll() is None, log.read_text()
        assert get(port, "/healthz") == 200 and get(port, "/readyz") == 503
        server.start(timeout=120.0)
        wait_until(lambda: get(port, "/readyz") == 200, 240, "ready once the database is up")
        cmds = workload("late", aggregates=10, per_aggregate=3)
        sender = Sender(kafka_bootstrap, TopicNames(cls.name).commands, cmds, chunk=10, pause=0.0)
        sender.start()
        sender.join(300)
        assert not sender.failed, sender.failed
        wait_until(lambda: len({r.command_id for r in results(kafka_bootstrap, cls.name)}) >= len(cmds), 300, "results")
        folded = assert_exactly_once(kafka_bootstrap, cls, cmds)
        wait_until(view_matches(lambda: assert_invoice_list(database, folded)), 180, "invoice-list = fold", 1.0)
        assert all(p.poll() is None for p in procs), "a process exited"
    finally:
        stop(procs)
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
