"""Command-handler replicas from consumer lag: a pure function, so every rule is unit-tested.

    target = clamp(ceil(lag / lagPerReplica), minReplicas, min(maxReplicas, partitions))

Scaling up follows the lag at once (a backlog only grows while we wait). Scaling down waits for
``cooldownSeconds`` since the last change: every change is a consumer-group rebalance that moves
partitions and their stores, and lag drops right after a scale-up, so an immediate scale-down would
flap. A replica count outside the bounds (the spec changed) is corrected at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from foldline_operator.spec import Autoscaling


@dataclass(frozen=True)
class ScaleDecision:
    replicas: int
    changed: bool
    reason: str


def bounds(policy: Autoscaling, partitions: int) -> tuple[int, int]:
    """(lowest, highest) replica count: at least one, at most the partitions and maxReplicas."""
    high = max(1, min(policy.max_replicas, partitions))
    low = min(max(1, policy.min_replicas), high)
    return low, high


def target_replicas(lag: int, policy: Autoscaling, partitions: int) -> int:
    low, high = bounds(policy, partitions)
    wanted = math.ceil(max(0, lag) / policy.lag_per_replica)
    return max(low, min(high, wanted))


def decide(
    current: int | None,
    lag: int | None,
    policy: Autoscaling,
    partitions: int,
    now: datetime,
    last_scale: datetime | None,
) -> ScaleDecision:
    """The replica count to run now. ``lag`` None (unknown, Kafka away) keeps the count within bounds."""
    low, high = bounds(policy, partitions)
    if current is None:
        start = target_replicas(lag or 0, policy, partitions)
        return ScaleDecision(start, True, f"initial: lag {lag or 0}")
    if current < low or current > high:
        clamped = max(low, min(high, current))
        return ScaleDecision(clamped, True, f"outside bounds [{low}, {high}]")
    if lag is None:
        return ScaleDecision(current, False, "lag unknown")
    target = target_replicas(lag, policy, partitions)
    if target > current:
        return ScaleDecision(target, True, f"lag {lag} > {current} x {policy.lag_per_replica}")
    if target < current:
        cooled = last_scale is None or now - last_scale >= timedelta(seconds=policy.cooldown_seconds)
        if cooled:
            return ScaleDecision(target, True, f"lag {lag} needs {target}")
        return ScaleDecision(current, False, "cooling down")
    return ScaleDecision(current, False, "steady")
