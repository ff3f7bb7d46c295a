"""Which partitions a handler process keeps a standby store of: a deterministic ring, no custom assignor.

The members of the handler group, ordered by their instance ids (``h-2`` before ``h-10``), form a ring.
The partitions a member owns are stood by for by the ``replicas`` members that follow it on the ring; so
with ``replicas >= members - 1`` every member stands by for every partition it does not own. Every process
computes the same answer from the same view of the group (the broker's description of it), and a member
never stands by for a partition it owns.

What it guarantees: each owned partition has ``min(replicas, members - 1)`` warm copies on other live
members. What it does not: the group's assignor, not this ring, picks who takes a partition when its
owner dies, so the survivor has a warm copy for sure only when every survivor has one
(``replicas >= members - 1``); otherwise the partition may land on a member without a copy, which
restores it in full as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_DIGITS = re.compile(r"(\d+)")


def ring_order(member: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order: ``h-2`` before ``h-10`` (a StatefulSet's ordinals)."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(member) if part)


def standby_partitions(
    me: str, owners: Mapping[str, Iterable[int]], replicas: int, siblings: Iterable[str] = ()
) -> frozenset[int]:
    """The partitions ``me`` stands by for, given each member's owned partitions.

    ``owners`` maps every member of the group (its instance id) to the partitions it owns. A process that is
    not (yet) a member stands by for nothing: it cannot know its place on the ring. ``siblings`` are the
    other workers of ``me``'s pod: they share its state directory, so what they own is never stood by for.
    """
    if replicas <= 0 or me not in owners:
        return frozenset()
    ring = sorted(owners, key=ring_order)
    size = len(ring)
    here = ring.index(me)
    mine = set(owners[me])
    wanted: set[int] = set()
    for index, member in enumerate(ring):
        if 1 <= (here - index) % size <= replicas:  # me is one of the `replicas` members after `member`
            wanted.update(owners[member])
    in_pod = {p for sibling in siblings for p in owners.get(sibling, ())}
    return frozenset(wanted - mine - in_pod)
