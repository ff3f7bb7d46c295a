"""One source partition of a policy: decode an event, fold the policy's state, turn its ``Emit``s into commands.

The task does no Kafka I/O (as the command handler's ``PartitionTask``): it returns the records to write
and keeps the touched state entries *dirty*; the worker writes one state record per dirty key per batch
into the changelog, commits, and only then calls ``committed`` so the local store takes them. If the
transaction aborts, ``discard`` forgets everything since the last commit.

Each key's entry remembers the version of the last source event handled, so an event read again (a
replay, a rewind after an abort) emits nothing; an emitted command's id is derived from the event, so
even a replay without state emits the ids the target has already answered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from foldline.aggregate import AggregateSpec
from foldline.errors import StoreCorruptedError
from foldline.ids import AggregateId, CommandId
from foldline.policies import Emit, Happened, PolicySpec, policy_command_id
from foldline.records import CommandEnvelope, EventRecord, SnapshotRecord, dead_letter, now_iso
from foldline.store.base import StateStore
from foldline.topics import TopicNames

log = structlog.get_logger("foldline.policy")


@dataclass(slots=True)
class Entry:
    """A source aggregate as the policy knows it: the last event version handled and the policy's state."""

    version: int
    state: Any


@dataclass(frozen=True, slots=True)
class Command:
    """An emitted command, ready to produce: keyed by the target aggregate id, as the gateway sends it."""

    topic: str
    key: bytes
    value: bytes
    command_id: str


@dataclass(slots=True)
class Outcome:
    commands: list[Command] = field(default_factory=list)
    dead_letter: bytes | None = None


class PolicyTask:
    def __init__(
        self,
        spec: PolicySpec,
        source: AggregateSpec,
        partition: int,
        store: StateStore,
        *,
        topic: str,
        clock: Callable[[], str] = now_iso,
    ) -> None:
        self.spec = spec
        self.source = source
        self.partition = partition
        self.store = store
        self.topic = topic
        self._clock = clock
        self._now = clock()
        self._dirty: dict[str, Entry] = {}
        self.needs_catch_up = True  # re-read the changelog once offsets are stable (see the worker)

    def load(self, aggregate_id: str) -> Entry:
        entry = self._dirty.get(aggregate_id)
        if entry is not None:
            return entry
        raw = self.store.get(aggregate_id.encode())
        if raw is None:
            return Entry(0, self.spec.policy.initial_state())
        try:
            snap = SnapshotRecord.from_bytes(raw)
            return Entry(snap.version, self.spec.decode_state(snap.schema_version, snap.state))
        except Exception as exc:
            raise StoreCorruptedError(
                f"policy {self.spec.name}, {self.topic}[{self.partition}]: cannot read a stored state: {exc}"
            ) from exc

    def begin_batch(self) -> None:
        self._now = self._clock()

    def handle(self, key: bytes | None, value: bytes | None, offset: int) -> Outcome:
        """Process one event record. Never raises for bad input or a failing ``react``: the partition goes on."""
        try:
            record = EventRecord.from_bytes(value)
            event = self.source.decode_event(record.type, record.schema_version, record.payload)
        except Exception as exc:
            return Outcome(dead_letter=self._letter(key, value, offset, "undecodable", _describe(exc)))
        entry = self.load(record.aggregate_id)
        if record.version <= entry.version:
            return Outcome()  # handled before: a replay or a rewind emits nothing new
        happened = Happened(self.source.name, record.aggregate_id, record.version, event, record.recorded_at)
        try:
            state, emits = self.spec.policy.react(entry.state, happened)
            commands = [self._command(record, i, emit) for i, emit in enumerate(emits)]
            # Encoded here so a state that cannot be written fails this event, not the batch's snapshot.
            self.spec.encode_state(state)
        except Exception as exc:  # the policy's own bug must not stop the partition
            message = _describe(exc)
            log.warning("react failed", policy=self.spec.name, aggregate_id=record.aggregate_id, version=record.version)
            # Handled all the same: a replay must not emit for it later, when the state has moved on.
            self._dirty[record.aggregate_id] = Entry(record.version, entry.state)
            return Outcome(dead_letter=self._letter(key, value, offset, "react_failed", message))
        self._dirty[record.aggregate_id] = Entry(record.version, state)
        return Outcome(commands)

    def _command(self, record: EventRecord, index: int, emit: Emit) -> Command:
        if not isinstance(emit, Emit):
            raise TypeError(f"react must return Emit values, got {type(emit).__qualname__}")
        if not isinstance(emit.aggregate_id, str) or not emit.aggregate_id:
            raise ValueError(f"an emitted command needs a non-empty aggregate id, got {emit.aggregate_id!r}")
        target = self.spec.target_of(emit.command)
        type_, payload = target.encode_command(emit.command)
        command_id = policy_command_id(self.spec.name, self.source.name, record.aggregate_id, record.version, index)
        envelope = CommandEnvelope(
            CommandId(command_id),
            AggregateId(emit.aggregate_id),
            type_,
            payload,
            emit.expected_version,
            issued_at=self._now,
        )
        return Command(TopicNames(target.name).commands, emit.aggregate_id.encode(), envelope.to_bytes(), command_id)

    def _letter(self, key: bytes | None, value: bytes | None, offset: int, code: str, message: str) -> bytes:
        return dead_letter(
            topic=self.topic, partition=self.partition, offset=offset, key=key, value=value, code=code, message=message
        )

    # -- batch boundaries ----------------------------------------------------------------------------
    def snapshots(self) -> list[tuple[bytes, bytes]]:
        """One state record per key touched since the last commit."""
        out = []
        for aggregate_id, entry in self._dirty.items():
            record = SnapshotRecord(
                AggregateId(aggregate_id),
                entry.version,
                self.spec.encode_state(entry.state),
                self.spec.state_version,
                (),
                self._now,
            )
            out.append((aggregate_id.encode(), record.to_bytes()))
        return out

    def committed(self, snapshots: list[tuple[bytes, bytes]], changelog_offset: int) -> None:
        if snapshots:
            self.store.write(snapshots, changelog_offset)
        self._dirty.clear()

    def discard(self) -> None:
        self._dirty.clear()

    def close(self) -> None:
        self._dirty.clear()
        self.store.close()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
