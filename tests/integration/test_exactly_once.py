"""Exactly-once under failure: SIGKILL mid-stream, rebalances, and a wiped local store.

Every check reads the topics read_committed, as any downstream reader would.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict

import pytest

from foldline import AggregateSpec, EventRecord, SnapshotRecord
from foldline.store.base import store_kinds
from foldline.topics import TopicNames
from tests.conftest import aggregate_path
from tests.kafka_support import command, read_topic, results, send, start_handler, wait_for_results

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}


def workload(aggregates: int, per_aggregate: int, prefix: str = "inv"):
    """Creates, then line items; interleaved across aggregates as real traffic would be."""
    ids = [f"{prefix}-{i}" for i in range(aggregates)]
    out = [command(a, "CreateInvoice", CREATE) for a in ids]
    for n in range(per_aggregate - 1):
        out += [
            command(a, "AddLineItem", {"line_id": f"l{n}", "description": "work", "quantity": 1, "unit_price": "1.00"})
            for a in ids
        ]
    return out


def stream(bootstrap, topic, cmds, seconds: float) -> threading.Thread:
    """Send the commands in slices over roughly ``seconds``, from a background thread."""
    slices = 20

    def run():
        size = -(-len(cmds) // slices)
        for i in range(0, len(cmds), size):
            send(bootstrap, topic, cmds[i : i + size])
            time.sleep(seconds / slices)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def assert_exactly_once(bootstrap, cls, cmds):
    names = TopicNames(cls.name)
    got = results(bootstrap, cls.name)
    per_command = Counter(r.command_id for r in got)
    assert set(per_command) == {c.command_id for c in cmds}
    duplicated = {k: v for k, v in per_command.items() if v != 1}
    assert not duplicated, f"{len(duplicated)} commands have more than one result"
    assert all(r.status == "accepted" for r in got), Counter(r.status for r in got)

    events = defaultdict(list)
    for msg in read_topic(bootstrap, names.events):
        record = EventRecord.from_bytes(msg.value())
        events[record.aggregate_id].append(record)
    accepted_events = sum(len(r.events) for r in got)
    assert sum(len(v) for v in events.values()) == accepted_events  # none lost, none duplicated
    spec = AggregateSpec(cls())
    snapshots = {}
    for msg in read_topic(bootstrap, names.snapshots):
        snapshots[msg.key().decode()] = SnapshotRecord.from_bytes(msg.value())
    for aggregate_id, records in events.items():
        assert [e.version for e in records] == list(range(1, len(records) + 1)), aggregate_id  # no gaps
        folded = spec.aggregate.fold(spec.decode_event(e.type, e.schema_version, e.payload) for e in records)
        snap = snapshots[aggregate_id]
        assert snap.version == len(records)
        assert spec.decode_state(snap.schema_version, snap.state) == folded


def test_sigkill_mid_stream_loses_and_duplicates_nothing(kafka_bootstrap, invoices_aggregate, tmp_path):
    cls = invoices_aggregate(partitions=6)
    cmds = workload(aggregates=400, per_aggregate=10)  # 4,000 commands
    path = aggregate_path(cls)
    a = start_handler(kafka_bootstrap, path, tmp_path / "a", "a", tmp_path)
    b = start_handler(kafka_bootstrap, path, tmp_path / "b", "b", tmp_path)
    sender = stream(kafka_bootstrap, TopicNames(cls.name).commands, cmds, seconds=8)
    try:
        time.sleep(4)
        a.kill()  # SIGKILL: no revoke, no flush, maybe an open transaction
        time.sleep(1)
        a = start_handler(kafka_bootstrap, path, tmp_path / "a", "a", tmp_path)  # same id: aborts its old txn
        sender.join()
        wait_for_results(kafka_bootstrap, cls.name, len(cmds), timeout=180)
    finally:
        for proc in (a, b):
            if proc.alive():
                proc.terminate()
    assert_exactly_once(kafka_bootstrap, cls, cmds)


def test_rebalance_moves_stores_and_state_stays_exact(kafka_bootstrap, invoices_aggregate, tmp_path):
    cls = invoices_aggregate(partitions=6)
    cmds = workload(aggregates=300, per_aggregate=10, prefix="reb")
    path = aggregate_path(cls)
    first = start_handler(kafka_bootstrap, path, tmp_path / "1", "one", tmp_path)
    second = start_handler(kafka_bootstrap, path, tmp_path / "2", "two", tmp_path)
    sender = stream(kafka_bootstrap, TopicNames(cls.name).commands, cmds, seconds=10)
    third = None
    try:
        time.sleep(3)
        third = start_handler(kafka_bootstrap, path, tmp_path / "3", "three", tmp_path)  # joins mid-stream
        time.sleep(3)
        assert first.terminate() == 0  # leaves cleanly mid-stream: its partitions move to the others
        sender.join()
        wait_for_results(kafka_bootstrap, cls.name, len(cmds), timeout=180)
    finally:
        for proc in (first, second, third):
            if proc is not None and proc.alive():
                proc.terminate()
    assert_exactly_once(kafka_bootstrap, cls, cmds)
    moved = [p for p in (second, third) if p is not None and "store restored" in p.log.read_text()]
    assert moved, "no surviving handler restored a store from the changelog"


@pytest.mark.parametrize("store", store_kinds())
def test_wiped_store_is_rebuilt_and_versions_go_on(kafka_bootstrap, invoices_aggregate, run_handler, tmp_path, store):
    import shutil

    cls = invoices_aggregate(partitions=2)
    names = TopicNames(cls.name)
    first = workload(aggregates=50, per_aggregate=3, prefix="wipe")
    send(kafka_bootstrap, names.commands, first)
    state = tmp_path / "state"
    handler = run_handler(cls(), state_dir=state, store=store)
    wait_for_results(kafka_bootstrap, cls.name, len(first))
    handler.stop()
    time.sleep(1.5)
    shutil.rmtree(state)
    # Each next command states the version it expects: only a correctly rebuilt store accepts them.
    more = [
        command(
            f"wipe-{i}",
            "AddLineItem",
            {"line_id": "late", "description": "d", "quantity": 1, "unit_price": "2.00"},
            expected_version=3,
        )
        for i in range(50)
    ]
    send(kafka_bootstrap, names.commands, more)
    run_handler(cls(), state_dir=state, store=store)
    got = {r.command_id: r for r in wait_for_results(kafka_bootstrap, cls.name, len(first) + len(more))}
    assert all(got[c.command_id].status == "accepted" and got[c.command_id].version == 4 for c in more)
    assert_exactly_once(kafka_bootstrap, cls, first + more)
