"""The standby ring: which partitions a handler process keeps warm copies of."""

from __future__ import annotations

from foldline.handler.placement import ring_order, standby_partitions


def test_the_ring_follows_statefulset_ordinals_naturally() -> None:
    names = ["h-10", "h-2", "h-0", "h-1"]
    assert sorted(names, key=ring_order) == ["h-0", "h-1", "h-2", "h-10"]


def test_each_owned_partition_is_stood_by_for_by_the_members_after_its_owner() -> None:
    owners = {"h-0": [0, 3], "h-1": [1], "h-2": [2]}
    assert standby_partitions("h-1", owners, 1) == {0, 3}  # h-0's successor
    assert standby_partitions("h-2", owners, 1) == {1}
    assert standby_partitions("h-0", owners, 1) == {2}  # the ring wraps
    copies = {p: sum(p in standby_partitions(m, owners, 1) for m in owners) for p in range(4)}
    assert copies == {0: 1, 1: 1, 2: 1, 3: 1}


def test_enough_replicas_mean_every_partition_it_does_not_own() -> None:
    owners = {"h-0": [0], "h-1": [1], "h-2": [2, 3]}
    assert standby_partitions("h-0", owners, 2) == {1, 2, 3}
    assert standby_partitions("h-0", owners, 5) == {1, 2, 3}  # more than members - 1: the same


def test_never_its_own_partitions_and_nothing_outside_the_group() -> None:
    owners = {"h-0": [0, 1], "h-1": [1]}  # a stale description may show a partition twice
    assert standby_partitions("h-0", owners, 1) == set()
    assert standby_partitions("h-1", owners, 1) == {0}
    assert standby_partitions("h-9", owners, 1) == set()  # not a member yet: no place on the ring
    assert standby_partitions("h-1", owners, 0) == set()


def test_never_what_a_worker_of_its_own_pod_owns() -> None:
    # Workers of one pod share its state directories: a sibling's partition is in the pod already.
    owners = {"h-0": [0], "h-0-w1": [1], "h-1": [2], "h-1-w1": [3]}
    assert standby_partitions("h-0-w1", owners, 3) == {0, 2, 3}
    assert standby_partitions("h-0-w1", owners, 3, siblings=["h-0"]) == {2, 3}
    assert standby_partitions("h-0", owners, 3, siblings=["h-0-w1", "h-0-w2"]) == {2, 3}
