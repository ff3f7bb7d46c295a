"""The correctness check every benchmark run passes before its figure counts.

A contender's output, read ``read_committed`` after the run, against the workload's plan:
- every command record got exactly one result: as many results per command id as it was sent, the first
  not a duplicate and every later one a duplicate, each with the status and version the plan decided;
- each aggregate's events carry versions 1, 2, 3, ... without gap or repeat, as many as its planned
  version, each from an accepted command of that aggregate;
- each aggregate's latest snapshot is at its last event's version and its state equals the fold of its
  events, folded with the aggregate's own ``evolve`` and encoded with its own codec.
``check_history`` is pure (tests feed it broken histories); ``read_*`` fetch a run's records.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from bench.workload import Planned
from foldline.aggregate import AggregateSpec
from foldline.records import CommandResult, EventRecord, SnapshotRecord

#: Problems listed in full; past this many only counted.
SHOWN = 20


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An aggregate's latest stored state, whichever topic and format it came from."""

    aggregate_id: str
    version: int
    state: Any


class Problems:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.count = 0

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.items) < SHOWN:
            self.items.append(text)

    def summary(self) -> str:
        more = f" (and {self.count - len(self.items)} more)" if self.count > len(self.items) else ""
        return "; ".join(self.items) + more


def _normal(value: Any) -> Any:
    """JSON as a reader sees it: the same for a state encoded here and one read back from a topic."""
    return orjson.loads(orjson.dumps(value))


def check_history(
    spec: AggregateSpec,
    planned: Sequence[Planned],
    results: Iterable[CommandResult],
    events: Iterable[EventRecord],
    snapshots: dict[str, Snapshot],
) -> Problems:
    problems = Problems()
    _check_results(planned, results, problems)
    accepted = {p.command_id: p.aggregate_id for p in planned if p.status == "accepted" and not p.resubmitted}
    final: dict[str, int] = {}
    for p in planned:
        final[p.aggregate_id] = max(final.get(p.aggregate_id, 0), p.version)
    by_aggregate: dict[str, list[EventRecord]] = defaultdict(list)
    for event in events:
        by_aggregate[event.aggregate_id].append(event)
        if accepted.get(event.command_id) != event.aggregate_id:
            problems.add(f"event {event.aggregate_id} v{event.version} from {event.command_id}, no accepted command")
    for aggregate_id in by_aggregate.keys() - final.keys():
        problems.add(f"events of {aggregate_id}, which no command addressed")
    for aggregate_id, version in final.items():
        records = by_aggregate.get(aggregate_id, [])
        versions = [r.version for r in records]
        if versions != list(range(1, version + 1)):
            problems.add(f"{aggregate_id}: event versions {_span(versions)}, expected 1..{version}")
            continue
        _check_snapshot(spec, aggregate_id, records, snapshots.get(aggregate_id), problems)
    return problems


def _check_results(planned: Sequence[Planned], results: Iterable[CommandResult], problems: Problems) -> None:
    sends: dict[str, list[Planned]] = defaultdict(list)
    for p in planned:
        sends[p.command_id].append(p)
    got: dict[str, list[CommandResult]] = defaultdict(list)
    for result in results:
        got[result.command_id].append(result)
    for command_id in got.keys() - sends.keys():
        problems.add(f"a result for {command_id}, which was never sent")
    for command_id, copies in sends.items():
        answers = got.get(command_id, [])
        plan = copies[0]
        if len(answers) != len(copies):
            problems.add(f"{command_id} ({plan.aggregate_id}): {len(answers)} results for {len(copies)} sends")
            continue
        flags = [r.duplicate for r in answers]
        if flags != [False] + [True] * (len(copies) - 1):
            problems.add(f"{command_id}: duplicate flags {flags}, expected the first result only not a duplicate")
        for answer in answers:
            if (answer.status, answer.version, answer.aggregate_id) != (plan.status, plan.version, plan.aggregate_id):
                problems.add(
                    f"{command_id} ({plan.aggregate_id}): {answer.status} at v{answer.version}, "
                    f"expected {plan.status} at v{plan.version}"
                )
                break


def _check_snapshot(
    spec: AggregateSpec, aggregate_id: str, records: list[EventRecord], snap: Snapshot | None, problems: Problems
) -> None:
    version = len(records)
    if version == 0:
        if snap is not None and snap.version != 0:
            problems.add(f"{aggregate_id}: a snapshot at v{snap.version} but no events")
        return
    if snap is None:
        problems.add(f"{aggregate_id}: no snapshot at v{version}")
        return
    if snap.version != version:
        problems.add(f"{aggregate_id}: latest snapshot at v{snap.version}, last event v{version}")
        return
    try:
        folded = spec.aggregate.fold(spec.decode_event(r.type, r.schema_version, r.payload) for r in records)
    except Exception as exc:  # an undecodable or unfoldable event is a finding, not a crash of the check
        problems.add(f"{aggregate_id}: its events do not fold: {type(exc).__name__}: {exc}")
        return
    if _normal(spec.encode_state(folded)) != _normal(snap.state):
        problems.add(f"{aggregate_id}: snapshot state at v{version} differs from the fold of its events")


def _span(versions: list[int]) -> str:
    if len(versions) <= 6:
        return str(versions)
    return f"[{versions[0]}, {versions[1]}, ..., {versions[-1]}] ({len(versions)} events)"


# -- reading a run's records ----------------------------------------------------------------------------
def read_topic(bootstrap: str, topic: str, partitions: int) -> list[Message]:
    """Every committed record of a topic, in each partition's order (partitions one after another)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-check-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.max.bytes": 64 << 20,
        }
    )
    out: dict[int, list[Message]] = {p: [] for p in range(partitions)}
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        left = set(range(partitions))
        while left:
            for msg in consumer.consume(10_000, 1.0):
                err = msg.error()
                if err is None:
                    out[msg.partition() or 0].append(msg)
                elif err.code() == KafkaError._PARTITION_EOF:
                    left.discard(msg.partition() or 0)
                else:
                    raise RuntimeError(f"reading {topic}: {err}")
    finally:
        consumer.close()
    return [m for p in range(partitions) for m in out[p]]


def read_results(bootstrap: str, topic: str, partitions: int) -> list[CommandResult]:
    return [CommandResult.from_bytes(m.value()) for m in read_topic(bootstrap, topic, partitions)]


def read_events(bootstrap: str, topic: str, partitions: int) -> list[EventRecord]:
    return [EventRecord.from_bytes(m.value()) for m in read_topic(bootstrap, topic, partitions)]


def read_snapshots(bootstrap: str, topic: str, partitions: int) -> dict[str, Snapshot]:
    """The latest snapshot per aggregate on a foldline snapshots topic."""
    latest: dict[str, Snapshot] = {}
    for msg in read_topic(bootstrap, topic, partitions):
        if msg.value() is None:
            continue
        snap = SnapshotRecord.from_bytes(msg.value())
        latest[snap.aggregate_id] = Snapshot(snap.aggregate_id, snap.version, snap.state)
    return latest
