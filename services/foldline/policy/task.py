"""One source partition of a policy: decode an event, fold the policy's state, turn its ``Emit``s into commands.

The task does no Kafka I/O (as the command handler's ``PartitionTask``): it returns the records to write
and keeps the touched state entries *dirty*; the worker writes one state record per dirty key per batch
into the changelog, commits, and only then calls ``committed`` so the local store takes them. If the
transaction aborts, ``discard`` forgets everything since the last commit.

Deadlines (``Schedule``) are kept in the key's entry, so in the store and the changelog with the state:
a state record's ``recent`` list holds a policy's pending deadlines, each with the command it will emit
already encoded (its id fixed when scheduled). ``fire(now)`` takes the due ones out and returns their
commands; the worker commits them with the entries' new records, so a deadline fires once.

Each key's entry remembers the version of the last source event handled, so an event read again (a
replay, a rewind after an abort) emits nothing; an emitted command's id is derived from the event, so
even a replay without state emits the ids the target has already answered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from foldline.aggregate import AggregateSpec
from foldline.errors import StoreCorruptedError
from foldline.ids import AggregateId, CommandId
from foldline.policies import Cancel, Emit, Happened, PolicySpec, Schedule, policy_command_id
from foldline.records import CommandEnvelope, EventRecord, SnapshotRecord, dead_letter, now_iso
from foldline.store.base import StateStore
from foldline.topics import TopicNames

log = structlog.get_logger("foldline.policy")


@dataclass(slots=True)
class Entry:
    """A source aggregate as the policy knows it: the last event version handled and the policy's state."""

    version: int
    state: Any
    #: Pending deadlines by name: ``{"name", "at" (ISO 8601 UTC), "topic", "key", "value", "command_id"}``.
    deadlines: dict[str, dict[str, str]] = field(default_factory=dict)


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
    code: str = ""  #: why it was dead-lettered


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
        #: The earliest pending deadline of each key that has one (rebuilt from the store on restore), so
        #: the worker's frequent "anything due?" check reads no store.
        self.deadline_keys: dict[str, datetime] = {}
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
            deadlines = {str(d["name"]): dict(d) for d in snap.recent}
            return Entry(snap.version, self.spec.decode_state(snap.schema_version, snap.state), deadlines)
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
            return Outcome(
                dead_letter=self._letter(key, value, offset, "undecodable", _describe(exc)), code="undecodable"
            )
        entry = self.load(record.aggregate_id)
        if record.version <= entry.version:
            return Outcome()  # handled before: a replay or a rewind emits nothing new
        happened = Happened(self.source.name, record.aggregate_id, record.version, event, record.recorded_at)
        try:
            state, emits = self.spec.policy.react(entry.state, happened)
            deadlines = dict(entry.deadlines)
            commands = []
            for i, item in enumerate(emits):
                if isinstance(item, Schedule):
                    deadlines[item.name] = self._deadline(record, i, item)
                elif isinstance(item, Cancel):
                    deadlines.pop(item.name, None)
                else:
                    commands.append(self._command(record, i, item))
            # Encoded here so a state that cannot be written fails this event, not the batch's snapshot.
            self.spec.encode_state(state)
        except Exception as exc:  # the policy's own bug must not stop the partition
            message = _describe(exc)
            log.warning("react failed", policy=self.spec.name, aggregate_id=record.aggregate_id, version=record.version)
            # Handled all the same: a replay must not emit for it later, when the state has moved on.
            self._dirty[record.aggregate_id] = Entry(record.version, entry.state, entry.deadlines)
            return Outcome(dead_letter=self._letter(key, value, offset, "react_failed", message), code="react_failed")
        self._dirty[record.aggregate_id] = Entry(record.version, state, deadlines)
        self._index(record.aggregate_id, deadlines)
        return Outcome(commands)

    def _index(self, key: str, deadlines: dict[str, dict[str, str]]) -> None:
        if deadlines:
            self.deadline_keys[key] = min(datetime.fromisoformat(d["at"]) for d in deadlines.values())
        else:
            self.deadline_keys.pop(key, None)

    def _deadline(self, record: EventRecord, index: int, item: Schedule) -> dict[str, str]:
        if not isinstance(item.name, str) or not item.name:
            raise ValueError(f"a deadline needs a non-empty name, got {item.name!r}")
        if not isinstance(item.at, datetime) or item.at.tzinfo is None:
            raise ValueError(f"a deadline's time must be an aware datetime, got {item.at!r}")
        command = self._command(record, index, item.emit)
        return {
            "name": item.name,
            "at": item.at.astimezone(UTC).isoformat(),
            "topic": command.topic,
            "key": command.key.decode(),
            "value": command.value.decode(),
            "command_id": command.command_id,
        }

    # -- deadlines -----------------------------------------------------------------------------------
    def index_deadlines(self) -> None:
        """Find the keys with pending deadlines in the store (after a restore): one scan of the partition."""
        self.deadline_keys.clear()
        for key, raw in self.store.items():
            try:
                recent = SnapshotRecord.from_bytes(raw).recent
                self._index(key.decode(), {str(d["name"]): d for d in recent})
            except Exception as exc:
                raise StoreCorruptedError(
                    f"policy {self.spec.name}, {self.topic}[{self.partition}]: cannot read a stored state: {exc}"
                ) from exc

    def due(self, now: datetime) -> bool:
        """Whether a deadline is due at ``now`` (from memory: no store read)."""
        return any(at <= now for at in self.deadline_keys.values())

    def pending(self) -> int:
        """How many deadlines this partition holds (reads every key that may have one)."""
        return sum(len(self.load(key).deadlines) for key in self.deadline_keys)

    def fire(self, now: datetime) -> list[Command]:
        """Take the deadlines due at ``now`` out of their entries and return their commands."""
        out: list[Command] = []
        for key in sorted(k for k, at in self.deadline_keys.items() if at <= now):
            entry = self.load(key)
            due = [d for d in entry.deadlines.values() if datetime.fromisoformat(d["at"]) <= now]
            left = {name: d for name, d in entry.deadlines.items() if datetime.fromisoformat(d["at"]) > now}
            self._index(key, left)
            if not due:
                continue
            self._dirty[key] = Entry(entry.version, entry.state, left)
            for d in sorted(due, key=lambda d: (d["at"], d["name"])):
                out.append(Command(d["topic"], d["key"].encode(), d["value"].encode(), d["command_id"]))
        return out

    def dirty(self) -> bool:
        return bool(self._dirty)

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
                tuple(entry.deadlines[name] for name in sorted(entry.deadlines)),
                self._now,
            )
            out.append((aggregate_id.encode(), record.to_bytes()))
        return out

    def committed(self, snapshots: list[tuple[bytes, bytes]], changelog_offset: int) -> None:
        if snapshots:
            self.store.write(snapshots, changelog_offset)
        self._dirty.clear()

    def discard(self) -> None:
        """The transaction aborted: forget its changes; the deadlines of the keys it touched are indexed
        again from the store (a deadline it fired is pending again)."""
        keys = list(self._dirty)
        self._dirty.clear()
        for key in keys:
            self._index(key, self.load(key).deadlines)

    def close(self) -> None:
        self._dirty.clear()
        self.store.close()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
