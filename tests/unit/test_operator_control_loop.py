"""The operator's control-loop bookkeeping: per-resource backoff, drift detection, probes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from foldline_operator.backoff import Backoff, unreachable
from foldline_operator.conditions import Condition
from foldline_operator.drift import Generations, controller
from foldline_operator.probes import Probes, acting, heartbeat
from foldline_operator.resync import Schedule, Tracked


def test_backoff_grows_per_resource_and_resets_on_success() -> None:
    backoff = Backoff(10.0, 60.0)
    assert backoff.due("a", 0.0)
    assert [backoff.failed("a", 0.0) for _ in range(5)] == [10.0, 20.0, 40.0, 60.0, 60.0]
    assert not backoff.due("a", 59.0) and backoff.due("a", 60.0)
    assert backoff.due("b", 1.0)  # another resource is not held back
    backoff.succeeded("a")
    assert backoff.due("a", 0.0) and backoff.failures("a") == 0
    assert backoff.failed("a", 100.0) == 10.0


def test_only_unreachable_dependencies_back_off() -> None:
    away = Condition("TopicsReady", False, "KafkaUnavailable", "timed out")
    assert unreachable([Condition("HandlersReady", True, "Available"), away]) == "KafkaUnavailable"
    assert unreachable([Condition("RevisionActive", False, "CatalogUnavailable")]) == "CatalogUnavailable"
    assert unreachable([Condition("TopicsReady", False, "PartitionShrinkRefused")]) is None
    assert unreachable([Condition("TopicsReady", True, "Verified")]) is None


def test_drift_is_a_new_generation_or_a_deletion() -> None:
    seen = Generations()
    assert not seen.drifted(None, "u", 1)  # the initial listing
    assert not seen.drifted("MODIFIED", "u", 1)  # status only: pods became ready
    assert seen.drifted("MODIFIED", "u", 2)  # spec changed (replicas, image)
    assert not seen.drifted("MODIFIED", "u", 2)
    assert seen.drifted("DELETED", "u", 2)
    assert not seen.drifted("ADDED", "u", 1)  # recreated
    assert not seen.drifted("MODIFIED", "other", 7)  # never seen before: nothing to compare with


def test_controller_is_the_foldline_owner() -> None:
    ref = {"apiVersion": "foldline.io/v1alpha1", "kind": "Projection", "name": "p", "controller": True}
    assert controller({"ownerReferences": [ref]}) == ("Projection", "p")
    assert controller({"ownerReferences": [{**ref, "apiVersion": "apps/v1"}]}) is None
    assert controller({"ownerReferences": [{**ref, "controller": False}]}) is None
    assert controller({}) is None


def test_liveness_fails_once_the_beats_stop() -> None:
    now = [0.0]
    probes = Probes(30.0, clock=lambda: now[0])
    assert probes.alive()
    now[0] = 29.0
    probes.beat()
    now[0] = 58.0
    assert probes.alive()
    now[0] = 59.5
    assert not probes.alive()


def test_the_live_replica_of_highest_priority_acts() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)

    def peer(priority: int, age: float = 1.0, lifetime: int = 60) -> dict[str, object]:
        return {"priority": priority, "lifetime": lifetime, "lastseen": (now - timedelta(seconds=age)).isoformat()}

    assert acting({}, 5, now)  # before its own record is written
    assert acting({"me": peer(5), "standby": peer(3)}, 5, now)
    assert not acting({"me": peer(3), "active": peer(5)}, 3, now)
    assert acting({"me": peer(3), "gone": peer(5, age=120)}, 3, now)  # a dead peer does not count
    assert not acting({"me": peer(5), "twin": peer(5)}, 5, now)  # a tie pauses both, as kopf does
    assert acting({"me": peer(5), "broken": {"priority": 9}}, 5, now)


def test_resync_schedule_tracks_objects_from_their_events() -> None:
    schedule = Schedule(30.0)
    a, b = Tracked("Projection", "ns", "a", "ua"), Tracked("EventSourcedAggregate", "ns", "b", "ub")
    schedule.seen(a, 0.0)
    schedule.seen(b, 10.0)
    assert schedule.due(29.0) == []  # the event's own pass was the first
    schedule.seen(a, 29.5)  # a later event (a status patch) does not postpone the resync
    assert schedule.due(30.0) == [a]
    assert schedule.due(40.0) == [b]
    assert schedule.due(59.0) == [] and schedule.due(60.0) == [a]
    schedule.gone("ua")
    assert schedule.due(1000.0) == [b] and len(schedule) == 1


def _eventually(probe: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(0.01)
    return False


def test_a_blocked_event_loop_fails_liveness_and_recovers() -> None:
    probes = Probes(stale_after=0.5)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    blocker = threading.Event()
    beating = asyncio.run_coroutine_threadsafe(heartbeat(probes, interval=0.05), loop)
    try:
        assert _eventually(probes.alive)
        loop.call_soon_threadsafe(blocker.wait)  # a blocking call on the loop: it stops turning
        assert _eventually(lambda: not probes.alive())
        blocker.set()
        assert _eventually(probes.alive)
    finally:
        blocker.set()
        beating.cancel()
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0.1), loop).result(5)  # the cancellation runs
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
