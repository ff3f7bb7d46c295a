"""What the operator counts from one state changelog record: a policy's pending deadlines."""

from __future__ import annotations

from datetime import UTC, datetime

from foldline.ids import AggregateId
from foldline.records import SnapshotRecord
from foldline_operator.policy_deadlines import _deadlines_of


def record(*ats: str) -> bytes:
    recent = tuple(
        {"name": f"d{i}", "at": at, "topic": "t", "key": "k", "value": "v", "command_id": "c"}
        for i, at in enumerate(ats)
    )
    return SnapshotRecord(
        AggregateId("inv-1"), 3, {"due_date": None}, 1, recent, "2026-01-01T00:00:00+00:00"
    ).to_bytes()


def test_counts_and_finds_the_earliest() -> None:
    found = _deadlines_of(record("2099-01-06T00:00:00+00:00", "2099-01-02T00:00:00+00:00"))
    assert found == (2, datetime(2099, 1, 2, tzinfo=UTC))


def test_no_deadlines_a_tombstone_or_garbage_count_nothing() -> None:
    assert _deadlines_of(record()) is None
    assert _deadlines_of(None) is None
    assert _deadlines_of(b"not a record") is None
