"""The operator's own health: liveness from a heartbeat of kopf's event loop, readiness from peering.

``/healthz`` is served from a thread of its own, so it answers even when kopf's event loop is stuck (a
blocking call in a coroutine, a deadlock): a task on that loop beats every second, and the process is not
alive once the beats stop for ``stale_after`` seconds. ``/readyz`` says whether this replica is the one
that acts: kopf pauses every replica but the live one of highest priority (all of them on a tie), and a
paused standby is not ready. The peering object is read as kopf reads it (``status``: one record per
replica with its priority, ``lastseen`` and ``lifetime``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any


def _live(record: Mapping[str, Any], now: datetime) -> bool:
    try:
        seen = datetime.fromisoformat(str(record["lastseen"]).replace("Z", "+00:00"))
        lifetime = timedelta(seconds=int(record.get("lifetime", 60)))
    except (KeyError, TypeError, ValueError):
        return False
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=UTC)
    return seen + lifetime > now


def acting(peers: Mapping[str, Any] | None, priority: int, now: datetime) -> bool:
    """Whether a replica of ``priority`` acts, given the peering object's ``status``: no live replica has a
    higher priority, and no other has the same (our own record is one of those with ours)."""
    live = [r for r in (peers or {}).values() if isinstance(r, Mapping) and _live(r, now)]
    priorities = [int(r.get("priority", 0)) for r in live]
    return not any(p > priority for p in priorities) and priorities.count(priority) <= 1


class Probes:
    """What ``/healthz`` and ``/readyz`` answer, fed by the event loop's beats and the peering watcher."""

    def __init__(self, stale_after: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.stale_after = stale_after
        self.clock = clock
        self._last_beat = clock()  # the start counts as a beat: kopf needs a moment to start its loop
        self._acting = True
        self._lock = threading.Lock()

    def beat(self) -> None:
        with self._lock:
            self._last_beat = self.clock()

    def alive(self) -> bool:
        with self._lock:
            return self.clock() - self._last_beat < self.stale_after

    def set_acting(self, value: bool) -> None:
        with self._lock:
            self._acting = value

    def acting(self) -> bool:
        with self._lock:
            return self._acting


async def heartbeat(probes: Probes, interval: float = 1.0) -> None:
    """Beat every ``interval`` seconds, for ever: run as a task on the event loop that must keep turning."""
    while True:
        probes.beat()
        await asyncio.sleep(interval)
