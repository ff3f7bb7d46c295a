"""The broker stopped and started again on its data under a running handler and projector.

Both stay up, say not-ready on /readyz while the broker is away and ready after it returned; a handler
started during the outage waits for it too. Commands sent before, during (held by the client) and after
each get exactly one result, the events have no version gap, and the view equals the fold of the events.
"""

from __future__ import annotations

import time

import pytest

from foldline.topics import TopicNames
from tests.faults_support import (
    Sender,
    aggregate_name,
    assert_exactly_once,
    assert_invoice_list,
    free_port,
    get,
    handler,
    log_events,
    make_aggregate,
    own_broker,
    projector,
    stop,
    wait_until,
    workload,
)

pytestmark = [pytest.mark.kafka]


def test_broker_outage_handlers_and_projector_wait_and_resume(tmp_path):
    with own_broker() as broker:
        bootstrap = broker.bootstrap
        cls = make_aggregate(bootstrap, aggregate_name("outage"), partitions=3)
        topic = TopicNames(cls.name).commands
        database = f"sqlite:///{tmp_path / 'views.db'}"
        ports = {"a": free_port(), "b": free_port(), "view": free_port()}
        procs = [
            handler(bootstrap, cls, "a", tmp_path, ports["a"]),
            projector(bootstrap, cls, "InvoiceList", database, "view", tmp_path, ports["view"]),
        ]
        try:
            wait_until(lambda: all(get(ports[k], "/readyz") == 200 for k in ("a", "view")), 180, "ready")
            cmds = workload("o", aggregates=60, per_aggregate=12)  # 720 commands, all accepted
            sender = Sender(bootstrap, topic, cmds, chunk=12, pause=0.1)  # about 6 s of steady traffic...
            sender.start()
            wait_until(lambda: sender.handed >= 200, 120, "traffic before the outage")
            broker.stop()  # ...stopped in the middle of it, most likely with a transaction open
            outage_start = time.monotonic()
            wait_until(
                lambda: all(get(ports[k], "/readyz") == 503 for k in ("a", "view")), 120, "not-ready during the outage"
            )
            # A handler started while the broker is away waits for it instead of exiting.
            procs.append(handler(bootstrap, cls, "b", tmp_path, ports["b"]))
            wait_until(lambda: get(ports["b"], "/healthz") == 200, 120, "the late handler's health port")
            assert get(ports["b"], "/readyz") == 503
            time.sleep(12)  # longer than the transaction timeout (10 s): open transactions time out meanwhile
            assert all(p.poll() is None for p in procs), "a process exited during the outage"
            assert all(get(ports[k], "/readyz") == 503 for k in ports)
            broker.start(keep_data=True, timeout=180.0)
            back = time.monotonic()
            wait_until(lambda: all(get(ports[k], "/readyz") == 200 for k in ports), 300, "ready after the outage")
            print(f"\noutage {back - outage_start:.1f}s; all ready {time.monotonic() - back:.1f}s after the broker")
            sender.join(600)
            assert not sender.failed, sender.failed
            late = workload("after", aggregates=10, per_aggregate=3)
            after = Sender(bootstrap, topic, late, chunk=30, pause=0.0)
            after.start()
            after.join(120)
            everything = cmds + late

            def all_answered() -> bool:
                from tests.kafka_support import results

                return len({r.command_id for r in results(bootstrap, cls.name)}) >= len(everything)

            wait_until(all_answered, 300, "a result for every command", step=1.0)
            folded = assert_exactly_once(bootstrap, cls, everything)

            def view_caught_up() -> bool:
                try:
                    assert_invoice_list(database, folded)
                except AssertionError:
                    return False
                return True

            wait_until(view_caught_up, 180, "the view to equal the fold of the events", step=1.0)
            assert all(p.poll() is None for p in procs), "a process exited"
        finally:
            stop(procs)
    for name in ("a", "b"):
        events = [e.get("event") for e in log_events(tmp_path / f"handler-{name}.log")]
        assert "kafka unavailable" in events, name
        assert "command handler stopped" in events, name
    events = [e.get("event") for e in log_events(tmp_path / "projector-view.log")]
    assert "kafka unavailable" in events and "kafka available again" in events


def test_a_fenced_handler_gives_up_its_partitions_and_stays_up(kafka_bootstrap, tmp_path):
    """Two handlers with one instance id (so one transactional id): each fences the other in turn. The
    fenced one gives its partitions up, waits and rejoins - no exit, no crash loop - and exactly-once holds."""
    cls = make_aggregate(kafka_bootstrap, aggregate_name("fenced"), partitions=3)
    ports = {"one": free_port(), "two": free_port()}
    procs = [handler(kafka_bootstrap, cls, "one", tmp_path, ports["one"], instance="same")]
    try:
        wait_until(lambda: get(ports["one"], "/readyz") == 200, 180, "the first handler ready")
        cmds = workload("f", aggregates=40, per_aggregate=10)  # each aggregate's commands in order
        topic = TopicNames(cls.name).commands
        first = Sender(kafka_bootstrap, topic, cmds[:200], chunk=10, pause=0.1)
        first.start()
        wait_until(lambda: first.handed >= 100, 120, "traffic")
        procs.append(handler(kafka_bootstrap, cls, "two", tmp_path, ports["two"], instance="same"))
        first.join(600)
        # The rest only once the second handler has its producer (its init_transactions fenced the first): a
        # fast first handler could otherwise answer everything before the second had even started.
        wait_until(
            lambda: '"command handler started"' in (tmp_path / "handler-two.log").read_text(errors="replace"),
            180,
            "the second handler started",
        )
        second = Sender(kafka_bootstrap, topic, cmds[200:], chunk=10, pause=0.1)
        second.start()
        second.join(600)
        assert not first.failed and not second.failed, first.failed + second.failed

        def all_answered() -> bool:
            from tests.kafka_support import results

            return len({r.command_id for r in results(kafka_bootstrap, cls.name)}) >= len(cmds)

        wait_until(all_answered, 600, "a result for every command", step=1.0)
        assert_exactly_once(kafka_bootstrap, cls, cmds)
        assert all(p.poll() is None for p in procs), "a fenced handler exited"
    finally:
        stop(procs)
    recoveries = [
        e
        for name in ("one", "two")
        for e in log_events(tmp_path / f"handler-{name}.log")
        if e.get("event") == "kafka clients failed; waiting for the broker to rebuild them"
    ]
    assert any(e["fenced"] for e in recoveries), recoveries
