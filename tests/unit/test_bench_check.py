"""The benchmarks' correctness check: a true history passes, and each kind of broken history is named.

The true history comes from the real partition task (the handler's per-partition logic, no Kafka) fed
the benchmark workload, which also shows the workload's planned outcomes are the handler's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.check import Snapshot, check_history
from bench.workload import Workload, invoices_workload
from foldline import AggregateSpec, CommandResult, EventRecord, SnapshotRecord
from foldline.examples.invoices import Invoices
from foldline.handler.task import PartitionTask
from foldline.store.base import open_state_store

SPEC = AggregateSpec(Invoices())


@dataclasses.dataclass
class History:
    workload: Workload
    results: list[CommandResult]
    events: list[EventRecord]
    snapshots: dict[str, Snapshot]

    def check(self) -> list[str]:
        problems = check_history(SPEC, self.workload.commands, self.results, self.events, self.snapshots)
        assert problems.count == 0 or problems.items, "a problem counted but not shown"
        return problems.items


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    workload = invoices_workload(400, 1, seed=3)
    tmp: Path = tmp_path_factory.mktemp("bench-check")
    task = PartitionTask(
        SPEC, 0, open_state_store("sqlite", tmp / "p0"), cache_size=1000, dedup_window=16, topic="x.commands"
    )
    results: list[CommandResult] = []
    events: list[EventRecord] = []
    snapshots: dict[str, Snapshot] = {}
    for n, planned in enumerate(workload.commands):
        outcome = task.handle(planned.key, planned.value, n)
        assert outcome.result is not None
        results.append(outcome.result)
        events.extend(outcome.events)
        if n % 50 == 49 or n == len(workload) - 1:  # a commit now and then, as the engine does
            snaps = task.snapshots()
            for _, raw in snaps:
                snap = SnapshotRecord.from_bytes(raw)
                snapshots[snap.aggregate_id] = Snapshot(snap.aggregate_id, snap.version, snap.state)
            task.committed(snaps, n)
    task.close()
    yield History(workload, results, events, snapshots)


def fresh(history: History) -> History:
    return History(history.workload, list(history.results), list(history.events), dict(history.snapshots))


def test_workload_has_the_realistic_mix(history: History) -> None:
    mix = history.workload.mix()
    n = len(history.workload)
    assert 0.004 < mix["resubmitted"] / n < 0.02
    assert 0.004 < mix["status conflict"] / n < 0.02
    assert 0.008 < mix["status rejected"] / n < 0.03
    kinds = {planned.value.split(b'"type":"')[1].split(b'"')[0] for planned in history.workload.commands}
    assert {b"CreateInvoice", b"AddLineItem", b"SendInvoice", b"RecordPayment", b"DeleteInvoice"} <= kinds


def test_the_handlers_true_history_passes(history: History) -> None:
    assert history.check() == []


def test_a_missing_result_is_named(history: History) -> None:
    broken = fresh(history)
    lost = broken.results.pop(10)
    assert any(lost.command_id in p and "0 results for 1 sends" in p for p in broken.check())


def test_a_result_twice_is_named(history: History) -> None:
    broken = fresh(history)
    broken.results.append(broken.results[5])
    assert any("2 results for 1 sends" in p for p in broken.check())


def test_a_resubmission_answered_as_new_is_named(history: History) -> None:
    broken = fresh(history)
    at = next(i for i, r in enumerate(broken.results) if r.duplicate)
    broken.results[at] = dataclasses.replace(broken.results[at], duplicate=False)
    assert any("duplicate flags" in p for p in broken.check())


def test_a_wrong_status_is_named(history: History) -> None:
    broken = fresh(history)
    at = next(i for i, r in enumerate(broken.results) if r.status == "conflict")
    broken.results[at] = dataclasses.replace(broken.results[at], status="accepted")  # type: ignore[arg-type]
    assert any("accepted" in p and "expected conflict" in p for p in broken.check())


def test_an_event_version_gap_is_named(history: History) -> None:
    broken = fresh(history)
    at = next(i for i, e in enumerate(broken.events) if e.version == 2)
    aggregate_id = broken.events[at].aggregate_id
    del broken.events[at]
    assert any(p.startswith(f"{aggregate_id}: event versions") for p in broken.check())


def test_a_snapshot_that_is_not_the_fold_is_named(history: History) -> None:
    broken = fresh(history)
    aggregate_id, snap = next((k, s) for k, s in broken.snapshots.items() if s.state.get("lines"))
    broken.snapshots[aggregate_id] = Snapshot(aggregate_id, snap.version, {**snap.state, "lines": []})
    assert broken.check() == [f"{aggregate_id}: snapshot state at v{snap.version} differs from the fold of its events"]


def test_a_stale_or_missing_snapshot_is_named(history: History) -> None:
    broken = fresh(history)
    first, second = list(broken.snapshots)[:2]
    stale = broken.snapshots[first]
    broken.snapshots[first] = Snapshot(first, stale.version - 1, stale.state)
    del broken.snapshots[second]
    problems = broken.check()
    assert any(p.startswith(f"{first}: latest snapshot at v") for p in problems)
    assert any(p.startswith(f"{second}: no snapshot") for p in problems)
