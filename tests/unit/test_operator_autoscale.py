"""Autoscaling on lag: replicas = clamp(ceil(lag / lagPerReplica), min, min(max, partitions)), with a cool-down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from foldline_operator.autoscale import bounds, decide, target_replicas
from foldline_operator.spec import Autoscaling

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
POLICY = Autoscaling(max_replicas=6, min_replicas=2, lag_per_replica=100, cooldown_seconds=300)


@pytest.mark.parametrize(
    ("lag", "partitions", "expected"),
    [
        (0, 12, 2),  # never below min
        (150, 12, 2),  # ceil(1.5) = 2
        (201, 12, 3),  # ceil(2.01) = 3
        (10_000, 12, 6),  # never above max
        (10_000, 4, 4),  # never above the partitions
        (-5, 12, 2),  # a negative lag (offsets raced) counts as none
    ],
)
def test_target(lag: int, partitions: int, expected: int) -> None:
    assert target_replicas(lag, POLICY, partitions) == expected


def test_bounds_when_partitions_are_fewer_than_min() -> None:
    assert bounds(Autoscaling(max_replicas=8, min_replicas=5), 3) == (3, 3)
    assert bounds(Autoscaling(max_replicas=8, min_replicas=1), 0) == (1, 1)


def test_first_decision_follows_the_lag() -> None:
    assert decide(None, 350, POLICY, 12, NOW, None).replicas == 4
    assert decide(None, None, POLICY, 12, NOW, None).replicas == 2


def test_scale_up_is_immediate_even_in_cooldown() -> None:
    decision = decide(2, 550, POLICY, 12, NOW, NOW - timedelta(seconds=10))
    assert (decision.replicas, decision.changed) == (6, True)


def test_scale_down_waits_for_the_cooldown() -> None:
    recent = decide(5, 0, POLICY, 12, NOW, NOW - timedelta(seconds=299))
    assert (recent.replicas, recent.changed, recent.reason) == (5, False, "cooling down")
    cooled = decide(5, 0, POLICY, 12, NOW, NOW - timedelta(seconds=300))
    assert (cooled.replicas, cooled.changed) == (2, True)
    assert decide(5, 0, POLICY, 12, NOW, None).replicas == 2


def test_out_of_bounds_is_corrected_at_once() -> None:
    assert decide(9, 0, POLICY, 12, NOW, NOW).replicas == 6
    assert decide(1, 0, POLICY, 12, NOW, NOW).replicas == 2
    assert decide(6, 10_000, POLICY, 3, NOW, NOW).replicas == 3  # partitions lowered the ceiling


def test_unknown_lag_or_steady_lag_changes_nothing() -> None:
    assert decide(4, None, POLICY, 12, NOW, None).changed is False
    assert decide(4, 400, POLICY, 12, NOW, None).reason == "steady"
