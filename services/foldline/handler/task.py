"""One partition's command processing: load, deduplicate, check the version, decide, evolve.

The task does no Kafka I/O. It turns a command's bytes into the records to write (a result, events,
dead letters) and keeps the touched aggregates as *dirty*; the engine writes one snapshot per dirty
aggregate per batch, commits, and only then calls ``committed`` so the store takes the new snapshots.
If the transaction aborts, ``discard`` forgets everything since the last commit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from foldline.aggregate import AggregateSpec, Rejection
from foldline.errors import CommandError, StoreCorruptedError
from foldline.handler.cache import LruCache
from foldline.ids import AggregateId, CommandId
from foldline.records import (
    CommandEnvelope,
    CommandResult,
    EventRecord,
    SnapshotRecord,
    Status,
    dead_letter,
    now_iso,
)
from foldline.store.base import StateStore

log = structlog.get_logger("foldline.handler")


@dataclass(slots=True)
class Entry:
    """An aggregate as the task knows it: version, decoded state, and its latest command results
    (``CommandResult.compact`` form, as its snapshot keeps them)."""

    version: int
    state: Any
    recent: list[dict[str, Any]] = field(default_factory=list)

    def find(self, command_id: str) -> dict[str, Any] | None:
        for item in reversed(self.recent):
            if item["command_id"] == command_id:
                found: dict[str, Any] = item
                return found
        return None


@dataclass(slots=True)
class Outcome:
    """What one command produced; ``result`` is None only for a record with no usable key."""

    result: CommandResult | None
    events: list[EventRecord] = field(default_factory=list)
    dead_letter: bytes | None = None


class PartitionTask:
    def __init__(
        self,
        spec: AggregateSpec,
        partition: int,
        store: StateStore,
        *,
        cache_size: int,
        dedup_window: int,
        topic: str,
        clock: Callable[[], str] = now_iso,
    ) -> None:
        self.spec = spec
        self.partition = partition
        self.store = store
        self.topic = topic
        self.dedup_window = dedup_window
        self._clock = clock
        self._now = clock()
        self._cache: LruCache[str, Entry] = LruCache(cache_size)
        self._dirty: dict[str, Entry] = {}
        self.needs_catch_up = True  # re-read the changelog once offsets are stable (see engine)

    # -- loading -------------------------------------------------------------------------------------
    def load(self, aggregate_id: str) -> Entry:
        entry = self._dirty.get(aggregate_id) or self._cache.get(aggregate_id)
        if entry is not None:
            return entry
        raw = self.store.get(aggregate_id.encode())
        entry = Entry(0, self.spec.aggregate.initial_state()) if raw is None else self.decode_snapshot(raw)
        self._cache.put(aggregate_id, entry)
        return entry

    def decode_snapshot(self, raw: bytes) -> Entry:
        try:
            snap = SnapshotRecord.from_bytes(raw)
            state = (
                self.spec.aggregate.initial_state()
                if snap.version == 0
                else self.spec.decode_state(snap.schema_version, snap.state)
            )
        except Exception as exc:
            raise StoreCorruptedError(f"partition {self.partition}: cannot read a stored snapshot: {exc}") from exc
        return Entry(snap.version, state, list(snap.recent))

    # -- processing ----------------------------------------------------------------------------------
    def begin_batch(self) -> None:
        """One timestamp for every record of a batch: they commit together anyway."""
        self._now = self._clock()

    def handle(self, key: bytes | None, value: bytes | None, offset: int) -> Outcome:
        """Process one command record. Never raises for bad input; the partition always moves on."""
        try:
            envelope = CommandEnvelope.from_bytes(value)
        except CommandError as exc:
            aggregate_id = key.decode(errors="replace") if key else ""
            return self._bad_record(key, value, offset, aggregate_id, exc)
        if key is not None and key != envelope.aggregate_id.encode():
            return self._fail_unrecorded(
                key, value, offset, envelope, CommandError("the record key differs from aggregate_id")
            )
        entry = self.load(envelope.aggregate_id)
        earlier = entry.find(envelope.command_id)
        if earlier is not None:
            return Outcome(CommandResult.from_compact(earlier, envelope.aggregate_id))
        return self._decide(envelope, entry, key, value, offset)

    def _decide(
        self, env: CommandEnvelope, entry: Entry, key: bytes | None, value: bytes | None, offset: int
    ) -> Outcome:
        if env.expected_version is not None and env.expected_version != entry.version:
            reason = f"expected version {env.expected_version}, but the aggregate is at version {entry.version}"
            return self._record(env, entry, self._result(env, Status.CONFLICT, entry.version, reason, "conflict"))
        try:
            command = self.spec.decode_command(env.type, env.payload)
        except CommandError as exc:
            return self._failed(env, entry, key, value, offset, exc.code, exc.message)
        try:
            decision = self.spec.aggregate.decide(entry.state, command)
            if isinstance(decision, Rejection):
                result = self._result(env, Status.REJECTED, entry.version, decision.reason, "rejected")
                return self._record(env, entry, result)
            state, version, events = entry.state, entry.version, []
            for event in decision:
                kind = self.spec.event_kind(event)
                state = self.spec.aggregate.evolve(state, event)
                version += 1
                events.append(
                    EventRecord(
                        env.aggregate_id,
                        kind.name,
                        version,
                        kind.encode(event),
                        env.command_id,
                        kind.version,
                        self._now,
                    )
                )
        except Exception as exc:  # the domain's own bug must not stop the partition
            message = f"{type(exc).__name__}: {exc}"
            log.warning("decide failed", command_id=env.command_id, aggregate_id=env.aggregate_id, error=message)
            return self._failed(env, entry, key, value, offset, "decide_failed", message)
        entry.state, entry.version = state, version
        result = self._result(env, Status.ACCEPTED, version, None, None, tuple(e.type for e in events))
        outcome = self._record(env, entry, result)
        outcome.events = events
        return outcome

    def _result(
        self,
        env: CommandEnvelope,
        status: Status,
        version: int,
        reason: str | None,
        code: str | None,
        events: tuple[str, ...] = (),
    ) -> CommandResult:
        return CommandResult(env.command_id, env.aggregate_id, status, version, events, reason, code, False, self._now)

    def _record(self, env: CommandEnvelope, entry: Entry, result: CommandResult) -> Outcome:
        """Remember the result under the command id, so a resubmission gets it again."""
        entry.recent.append(result.compact())
        if len(entry.recent) > self.dedup_window:
            del entry.recent[: len(entry.recent) - self.dedup_window]
        self._dirty[env.aggregate_id] = entry
        return Outcome(result)

    def _failed(
        self,
        env: CommandEnvelope,
        entry: Entry,
        key: bytes | None,
        value: bytes | None,
        offset: int,
        code: str,
        message: str,
    ) -> Outcome:
        outcome = self._record(env, entry, self._result(env, Status.FAILED, entry.version, message, code))
        outcome.dead_letter = self._letter(key, value, offset, code, message)
        return outcome

    def _fail_unrecorded(
        self, key: bytes | None, value: bytes | None, offset: int, env: CommandEnvelope, exc: CommandError
    ) -> Outcome:
        result = self._result(env, Status.FAILED, 0, exc.message, exc.code)
        return Outcome(result, dead_letter=self._letter(key, value, offset, exc.code, exc.message))

    def _bad_record(
        self, key: bytes | None, value: bytes | None, offset: int, aggregate_id: str, exc: CommandError
    ) -> Outcome:
        """An undecodable record: a failed result when a command id can be salvaged, always a dead letter."""
        command_id = _salvage_command_id(value)
        result = None
        if command_id:
            result = CommandResult(
                CommandId(command_id),
                AggregateId(aggregate_id),
                Status.FAILED,
                0,
                (),
                exc.message,
                exc.code,
                False,
                self._now,
            )
        return Outcome(result, dead_letter=self._letter(key, value, offset, exc.code, exc.message))

    def _letter(self, key: bytes | None, value: bytes | None, offset: int, code: str, message: str) -> bytes:
        """The dead letter of a record of this partition."""
        return dead_letter(
            topic=self.topic, partition=self.partition, offset=offset, key=key, value=value, code=code, message=message
        )

    # -- batch boundaries ----------------------------------------------------------------------------
    def snapshots(self) -> list[tuple[bytes, bytes]]:
        """One snapshot per aggregate touched since the last commit: compaction keeps only the last anyway."""
        out = []
        now = self._now
        for aggregate_id, entry in self._dirty.items():
            state = self.spec.encode_state(entry.state)
            record = SnapshotRecord(
                AggregateId(aggregate_id), entry.version, state, self.spec.state.version, tuple(entry.recent), now
            )
            out.append((aggregate_id.encode(), record.to_bytes()))
        return out

    def committed(self, snapshots: list[tuple[bytes, bytes]], changelog_offset: int) -> None:
        """The transaction with these snapshots committed: the store may now take them."""
        if snapshots:
            self.store.write(snapshots, changelog_offset)
        for aggregate_id, entry in self._dirty.items():
            self._cache.put(aggregate_id, entry)
        self._dirty.clear()

    def discard(self) -> None:
        """The transaction aborted: forget what it changed (the cache may hold uncommitted state)."""
        self._dirty.clear()
        self._cache.clear()

    def forget_all(self) -> None:
        """Drop cached entries: the store was just restored and may hold newer snapshots."""
        self._cache.clear()

    def close(self) -> None:
        self._cache.clear()
        self.store.close()


def _salvage_command_id(value: bytes | None) -> str | None:
    """The command id of a record that failed validation, when its JSON at least parses."""
    import json

    try:
        data = json.loads(value) if value else None
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("command_id"), str) and data["command_id"]:
        return str(data["command_id"])
    return None
