"""The periodic resync, without kopf timers: kopf keeps a finalizer on every object that has a timer (to
stop it on deletion), and a finalizer with no operator left makes deleting the object, or its namespace,
hang. Here the objects are tracked from their watch events (kopf's ``on.event``: no finalizer, no
state in the object), and a thread of our own runs each one's periodic pass every ``interval`` seconds
on a small pool of its own: resyncs never take the worker threads that edits and drift repairs need.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import structlog

log = structlog.get_logger("foldline.operator")


@dataclass(frozen=True)
class Tracked:
    kind: str
    namespace: str
    name: str
    uid: str


class Schedule:
    """When each tracked object is due for its periodic pass. Pure bookkeeping; the clock is the caller's."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next: dict[str, tuple[Tracked, float]] = {}
        self._lock = threading.Lock()

    def seen(self, item: Tracked, now: float) -> None:
        """A watch event of the object: tracked from now on (its event handler runs its first pass)."""
        with self._lock:
            known = self._next.get(item.uid)
            self._next[item.uid] = (item, known[1] if known else now + self.interval)

    def gone(self, uid: str) -> None:
        with self._lock:
            self._next.pop(uid, None)

    def due(self, now: float) -> list[Tracked]:
        """The objects whose pass is due; each is next due ``interval`` seconds from now."""
        with self._lock:
            out = [item for item, at in self._next.values() if at <= now]
            for item in out:
                self._next[item.uid] = (item, now + self.interval)
        return out

    def __len__(self) -> int:
        with self._lock:
            return len(self._next)


class Resyncer:
    """Runs ``run(item)`` for every due object while ``acting()``, until stopped."""

    def __init__(
        self, schedule: Schedule, run: Callable[[Tracked], None], acting: Callable[[], bool], workers: int = 4
    ) -> None:
        self.schedule, self.run, self.acting = schedule, run, acting
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="resync")
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="resync", daemon=True)

    def start(self) -> Resyncer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        tick = min(1.0, self.schedule.interval / 2)
        while not self._stop.wait(tick):
            if not self.acting():  # a paused standby: kopf acts for the other replica only
                continue
            for item in self.schedule.due(time.monotonic()):
                with self._lock:
                    if item.uid in self._running:  # still at its last pass (a slow dependency)
                        continue
                    self._running.add(item.uid)
                try:
                    self._pool.submit(self._one, item)
                except RuntimeError:  # shut down
                    return

    def _one(self, item: Tracked) -> None:
        try:
            self.run(item)
        except Exception as exc:  # the Runner logged it and set the backoff; the loop goes on
            log.debug("resync pass failed", kind=item.kind, name=item.name, error=str(exc))
        finally:
            with self._lock:
                self._running.discard(item.uid)
