"""How many deadlines a policy has pending, read from its committed state changelog.

The changelog is the truth the workers restore from: each record is the latest state of one source
aggregate instance, and its ``recent`` list holds that instance's pending deadlines (see
``foldline.policy.task``). A deadline counted here has been committed; one fired has been taken out in
the same transaction as its command. So the count is neither a worker's in-memory view (which double
counts or misses partitions during a rebalance) nor a scrape of pods the operator may not reach.

Reading is incremental: per Policy the reader keeps, in memory, the next offset of each state partition
and the keys that have deadlines (only those), so a resync reads only what was written since the last
one. After an operator restart the first pass reads the compacted topics once from the start. Every
pass uses a consumer of its own, created and closed in the calling thread (a confluent-kafka client is
only ever used from the thread that owns it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from confluent_kafka import Consumer, KafkaException, TopicPartition

from foldline.errors import BrokerUnavailableError
from foldline.records import SnapshotRecord

#: Partition offsets as ``KafkaPort.offsets`` gives them: partition → (earliest, latest read_committed).
Offsets = Mapping[int, tuple[int, int]]


@dataclass(frozen=True)
class Deadlines:
    count: int
    earliest: datetime | None


@dataclass
class _TopicState:
    positions: dict[int, int] = field(default_factory=dict)  # partition → next offset to read
    pending: dict[tuple[int, bytes], tuple[int, datetime]] = field(default_factory=dict)  # key → (count, earliest)


def _deadlines_of(value: bytes | None) -> tuple[int, datetime] | None:
    """(count, earliest) of one state record; None for a tombstone, no deadlines, or a record not read."""
    if value is None:
        return None
    try:
        recent = SnapshotRecord.from_bytes(value).recent
        times = [datetime.fromisoformat(str(d["at"])) for d in recent]
    except Exception:  # a record the workers could not read either: they dead-letter, we do not count it
        return None
    return (len(times), min(times)) if times else None


class DeadlineReader:
    """Counts pending deadlines per Policy (by its uid) from its state topics."""

    def __init__(self, timeout: float = 15.0) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], _TopicState] = {}

    def forget(self, uid: str) -> None:
        with self._lock:
            for key in [k for k in self._states if k[0] == uid]:
                del self._states[key]

    def _state(self, uid: str, topic: str) -> _TopicState:
        with self._lock:
            return self._states.setdefault((uid, topic), _TopicState())

    def read(self, uid: str, config: Mapping[str, str], topics: Mapping[str, Offsets]) -> Deadlines:
        """Catch up with every state topic (its offsets given) and count; ``BrokerUnavailableError`` when
        the end cannot be reached in time (the count would be a guess)."""
        wanted: dict[tuple[str, int], int] = {}  # (topic, partition) → end offset still to reach
        assignment = []
        for topic, offsets in topics.items():
            state = self._state(uid, topic)
            for partition, (earliest, latest) in offsets.items():
                if state.positions.get(partition, 0) > latest:  # the topic was deleted and made again
                    state.positions[partition] = 0
                    state.pending = {k: v for k, v in state.pending.items() if k[0] != partition}
                start = max(state.positions.get(partition, 0), earliest)
                state.positions[partition] = start
                if start < latest:
                    wanted[(topic, partition)] = latest
                    assignment.append(TopicPartition(topic, partition, start))
        if assignment:
            self._consume(uid, config, assignment, wanted)
        count, first = 0, None  # type: tuple[int, datetime | None]
        for topic in topics:
            for n, at in self._state(uid, topic).pending.values():
                count += n
                first = at if first is None or at < first else first
        return Deadlines(count, first)

    def _consume(
        self, uid: str, config: Mapping[str, str], assignment: list[TopicPartition], wanted: dict[tuple[str, int], int]
    ) -> None:
        consumer = Consumer(
            {
                **config,
                "group.id": f"foldline-operator.deadlines.{uid}",  # never joined, never committed
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": False,
                "log_level": 2,
            }
        )
        try:
            consumer.assign(assignment)
            stop = time.monotonic() + self.timeout
            while wanted:
                if time.monotonic() > stop:
                    raise BrokerUnavailableError(
                        f"could not read the state changelog to its end within {self.timeout:.0f}s"
                    )
                for msg in consumer.consume(500, 0.5):
                    if msg.error() is not None:
                        continue
                    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                    if topic is None or partition is None or offset is None:
                        continue
                    state = self._state(uid, topic)
                    found = _deadlines_of(msg.value())
                    key = (partition, msg.key() or b"")
                    if found is None:
                        state.pending.pop(key, None)
                    else:
                        state.pending[key] = found
                    state.positions[partition] = max(state.positions.get(partition, 0), offset + 1)
                # A transaction's commit marker takes an offset no record has: the position moves past it.
                for tp in consumer.position([TopicPartition(t, p) for t, p in wanted]):
                    if tp.offset >= 0:
                        state = self._state(uid, tp.topic)
                        state.positions[tp.partition] = max(state.positions.get(tp.partition, 0), tp.offset)
                for (topic, partition), end in list(wanted.items()):
                    if self._state(uid, topic).positions.get(partition, 0) >= end:
                        del wanted[(topic, partition)]
        except KafkaException as exc:
            raise BrokerUnavailableError(f"cannot read the state changelog: {exc}") from exc
        finally:
            consumer.close()
