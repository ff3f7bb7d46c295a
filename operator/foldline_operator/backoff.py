"""Per-resource retry delays: a resource whose Kafka or database cannot be reached is retried less and
less often, so its passes (each up to a client timeout long) do not crowd out the healthy resources.

Only the periodic resync waits for the delay; an edit of the resource, or a change of what it owns, always
gets a pass at once (the edit may be the fix). Pure bookkeeping, no I/O; the clock is the caller's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from foldline_operator.conditions import Condition

#: Condition reasons meaning "a dependency did not answer": retried with a growing delay.
UNREACHABLE = frozenset({"KafkaUnavailable", "KafkaAuthenticationFailed", "CatalogUnavailable"})


def unreachable(conditions: Iterable[Condition]) -> str | None:
    """The first False condition's reason that says a dependency was unreachable, if any."""
    return next((c.reason for c in conditions if c.status is False and c.reason in UNREACHABLE), None)


@dataclass
class _State:
    failures: int
    due: float


class Backoff:
    """Delays ``base``, 2 x ``base``, 4 x ``base``... capped at ``cap`` seconds, per key (a resource's uid)."""

    def __init__(self, base: float, cap: float) -> None:
        self.base, self.cap = base, max(base, cap)
        self._states: dict[str, _State] = {}
        self._lock = threading.Lock()

    def failed(self, key: str, now: float) -> float:
        """Record a failed pass; returns the delay before the next periodic one."""
        with self._lock:
            state = self._states.get(key)
            failures = state.failures + 1 if state else 1
            delay = float(min(self.cap, self.base * 2 ** min(failures - 1, 32)))
            self._states[key] = _State(failures, now + delay)
            return delay

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._states.pop(key, None)

    forget = succeeded

    def due(self, key: str, now: float) -> bool:
        """Whether a periodic pass may run now (always, unless the last pass failed and the delay runs)."""
        with self._lock:
            state = self._states.get(key)
            return state is None or now >= state.due

    def failures(self, key: str) -> int:
        with self._lock:
            state = self._states.get(key)
            return state.failures if state else 0
