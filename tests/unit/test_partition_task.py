"""The partition task without Kafka: what one command produces, and what a batch leaves behind."""

from __future__ import annotations

import json

import pytest

from foldline import AggregateSpec, CommandEnvelope, SnapshotRecord
from foldline.examples.invoices import Invoices
from foldline.handler.task import PartitionTask
from foldline.store.base import open_state_store

CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}
LINE = {"line_id": "a", "description": "d", "quantity": 2, "unit_price": "5.00"}


@pytest.fixture
def task(tmp_path):
    t = PartitionTask(
        AggregateSpec(Invoices()),
        0,
        open_state_store("sqlite", tmp_path / "p0"),
        cache_size=100,
        dedup_window=3,
        topic="invoices.commands",
        clock=lambda: "2026-11-26T00:00:00Z",
    )
    yield t
    t.close()


def env(aggregate_id, type_, payload, command_id, expected=None):
    return CommandEnvelope(command_id, aggregate_id, type_, payload, expected).to_bytes()


def handle(task, aggregate_id, type_, payload, command_id, expected=None):
    return task.handle(aggregate_id.encode(), env(aggregate_id, type_, payload, command_id, expected), 0)


def test_versions_count_events_and_one_snapshot_per_aggregate(task):
    assert handle(task, "i1", "CreateInvoice", CREATE, "c1").result.version == 1
    assert handle(task, "i1", "AddLineItem", LINE, "c2").result.version == 2
    out = handle(task, "i2", "CreateInvoice", CREATE, "c3")
    assert [e.version for e in out.events] == [1]
    snaps = dict(task.snapshots())
    assert set(snaps) == {b"i1", b"i2"}
    assert SnapshotRecord.from_bytes(snaps[b"i1"]).version == 2


def test_store_takes_snapshots_only_when_committed(task):
    handle(task, "i1", "CreateInvoice", CREATE, "c1")
    snaps = task.snapshots()
    assert task.store.get(b"i1") is None
    task.committed(snaps, 42)
    assert task.store.changelog_offset() == 42 and task.store.get(b"i1") == dict(snaps)[b"i1"]
    assert task.snapshots() == []  # nothing dirty after the commit


def test_discard_forgets_uncommitted_changes(task):
    handle(task, "i1", "CreateInvoice", CREATE, "c1")
    task.committed(task.snapshots(), 1)
    handle(task, "i1", "AddLineItem", LINE, "c2")
    task.discard()  # the transaction aborted
    assert task.load("i1").version == 1
    assert handle(task, "i1", "AddLineItem", LINE, "c2").result.version == 2  # runs again, not a duplicate


def test_duplicate_within_window_returns_first_result(task):
    first = handle(task, "i1", "CreateInvoice", CREATE, "c1").result
    again = handle(task, "i1", "CreateInvoice", CREATE, "c1")
    assert again.result.duplicate and again.result.status == first.status == "accepted" and not again.events
    for n in range(3):  # push c1 out of the window of 3
        handle(task, "i1", "AddLineItem", {**LINE, "line_id": f"l{n}"}, f"x{n}")
    assert handle(task, "i1", "CreateInvoice", CREATE, "c1").result.status == "rejected"


def test_duplicates_survive_a_restart_through_the_snapshot(task, tmp_path):
    handle(task, "i1", "CreateInvoice", CREATE, "c1")
    task.committed(task.snapshots(), 1)
    fresh = PartitionTask(AggregateSpec(Invoices()), 0, task.store, cache_size=10, dedup_window=3, topic="t")
    assert handle(fresh, "i1", "CreateInvoice", CREATE, "c1").result.duplicate


def test_conflict_keeps_the_version(task):
    handle(task, "i1", "CreateInvoice", CREATE, "c1")
    out = handle(task, "i1", "AddLineItem", LINE, "c2", expected=0)
    assert out.result.status == "conflict" and out.result.version == 1 and not out.events


def test_key_mismatch_and_unparseable_records(task):
    out = task.handle(b"other", env("i1", "CreateInvoice", CREATE, "c1"), 7)
    assert out.result.status == "failed" and out.dead_letter is not None
    out = task.handle(b"i1", b"{not json", 8)
    assert out.result is None and json.loads(out.dead_letter)["error"]["code"] == "undecodable"
    out = task.handle(b"i1", json.dumps({"command_id": "c9", "type": "X"}).encode(), 9)
    assert out.result.command_id == "c9" and out.result.code == "undecodable"
    out = task.handle(b"i1", None, 10)
    assert out.result is None and json.loads(out.dead_letter)["value"] is None
