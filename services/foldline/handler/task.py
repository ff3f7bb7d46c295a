"""One partition's command processing: load, deduplicate, check the version, decide, evolve.

The task does no Kafka I/O. It turns a command's bytes into the records to write (a result, events,
dead letters) and keeps the touched aggregates as *dirty*; the engine writes one snapshot per dirty
aggregate per batch, commits, and only then calls ``committed`` so the store takes the new snapshots.
If the transaction aborts, ``discard`` forgets everything since the last commit.

No record stops the partition: whatever a record holds, ``handle`` returns an outcome (a failed result
when a command id can be recovered, a dead letter with the cause), and every record it asks the engine to
write fits ``max_record_bytes`` - a command whose events or snapshot would not is refused (``too_large``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from foldline.aggregate import AggregateSpec, Rejection
from foldline.errors import CommandError, PermanentError, RetryableError, StoreCorruptedError
from foldline.handler.cache import LruCache
from foldline.handler.intake import MAX_KEY_BYTES, Refusal, read_command, salvage_command_id
from foldline.ids import AggregateId, CommandId
from foldline.records import (
    CommandEnvelope,
    CommandResult,
    EventRecord,
    SnapshotRecord,
    Status,
    clip,
    dead_letter,
    dumps,
    now_iso,
    scrub,
)
from foldline.store.base import StateStore

log = structlog.get_logger("foldline.handler")

#: A result's reason is cut to this many characters (a reason may quote a huge input back).
MAX_REASON = 500
#: Room a snapshot keeps for each of its ``recent`` results: a state may grow only as far as the record
#: size limit less this times the dedup window, so the results after it still fit.
RESULT_ROOM = 1024


@dataclass(slots=True)
class Entry:
    """An aggregate as the task knows it: version, decoded state, and its latest command results
    (``CommandResult.compact`` form, as its snapshot keeps them)."""

    version: int
    state: Any
    recent: list[dict[str, Any]] = field(default_factory=list)
    #: The encoded state, measured when a command changed it; the batch's snapshot reuses it.
    state_json: bytes | None = None
    #: Bytes of the snapshot around its state and results (0: not measured yet).
    bare: int = 0
    #: ``recent`` by command id (the newest of an id): a look-up per command instead of a scan.
    index: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for item in self.recent:
            self.index[item["command_id"]] = item

    def find(self, command_id: str) -> dict[str, Any] | None:
        return self.index.get(command_id)

    def remember(self, item: dict[str, Any], window: int) -> None:
        """Keep a result, and only the newest ``window`` of them."""
        recent = self.recent
        recent.append(item)
        self.index[item["command_id"]] = item
        while len(recent) > window:
            self.forget_oldest()

    def forget_oldest(self) -> dict[str, Any]:
        dropped = self.recent.pop(0)
        if self.index.get(dropped["command_id"]) is dropped:
            del self.index[dropped["command_id"]]
        return dropped


@dataclass(slots=True)
class Outcome:
    """What one command produced; ``result`` is None only for a record with no usable key."""

    result: CommandResult | None
    events: list[EventRecord] = field(default_factory=list)
    #: ``events`` encoded (measured for the size limit anyway): what the engine writes.
    event_bytes: list[bytes] = field(default_factory=list)
    dead_letter: bytes | None = None
    #: The dead letter's code, when there is one.
    code: str | None = None
    #: The Kafka key of the records written for this one: the record's own, unless it is too long to be an
    #: aggregate id's (then none; the dead letter keeps it).
    key: bytes | None = None


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
        partitions: int | None = None,
        max_record_bytes: int = 900_000,
        clock: Callable[[], str] = now_iso,
    ) -> None:
        self.spec = spec
        self.partition = partition
        #: The commands topic's partition count, for the placement check (None: no check).
        self.partitions = partitions
        self.store = store
        self.topic = topic
        self.dedup_window = dedup_window
        self.max_record_bytes = max_record_bytes
        self._result_room = min(dedup_window * RESULT_ROOM, max_record_bytes // 4)
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
            outcome = self._handle(key, value, offset)
        except (RetryableError, PermanentError):
            raise  # the store or the deployment, not this record: stop as before
        except Exception as exc:  # a failure of ours on one record must not stop the partition either
            message = f"the handler failed on this record: {type(exc).__name__}: {exc}"
            log.warning("record failed", partition=self.partition, offset=offset, error=clip(message, MAX_REASON))
            refusal = Refusal("internal_error", message, salvage_command_id(value), _key_text(key))
            outcome = self._refused(key, value, offset, refusal)
        outcome.key = key if key is not None and len(key) <= MAX_KEY_BYTES else None
        return outcome

    def _handle(self, key: bytes | None, value: bytes | None, offset: int) -> Outcome:
        envelope = read_command(key, value, partition=self.partition, partitions=self.partitions)
        if isinstance(envelope, Refusal):
            return self._refused(key, value, offset, envelope)
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
            command = self.spec.decode_command(env.type, env.payload, env.schema_version)
        except CommandError as exc:
            return self._failed(env, entry, key, value, offset, exc.code, exc.message)
        except Exception as exc:  # a codec surprise (RecursionError on deep JSON, ...) is still the payload's
            message = f"{type(exc).__name__}: {exc}"
            return self._failed(env, entry, key, value, offset, "invalid_payload", message)
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
            encoded = [event.to_bytes() for event in events]
            state_json = dumps(self.spec.encode_state(state)) if events else None
        except Exception as exc:  # the domain's own bug must not stop the partition
            message = f"{type(exc).__name__}: {exc}"
            log.warning("decide failed", command_id=env.command_id, aggregate_id=env.aggregate_id, error=message)
            return self._failed(env, entry, key, value, offset, "decide_failed", message)
        if state_json is not None:
            if not entry.bare:
                entry.bare = self._bare_snapshot_size(env.aggregate_id)
            size = entry.bare + len(state_json)
            too_large = self._too_large([len(raw) for raw in encoded], size)
            if too_large is not None:
                return self._failed(env, entry, key, value, offset, "too_large", too_large)
            entry.state_json = state_json
        entry.state, entry.version = state, version
        result = self._result(env, Status.ACCEPTED, version, None, None, tuple(e.type for e in events))
        outcome = self._record(env, entry, result)
        outcome.events, outcome.event_bytes = events, encoded
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
        reason = None if reason is None else scrub(clip(reason, MAX_REASON))  # the snapshot keeps it too
        return CommandResult(env.command_id, env.aggregate_id, status, version, events, reason, code, False, self._now)

    def _too_large(self, event_sizes: list[int], snapshot_size: int) -> str | None:
        """Why a command's events or the snapshot after it cannot be written, if they cannot."""
        limit = self.max_record_bytes
        biggest = max(event_sizes, default=0)
        if biggest > limit:
            return f"an event would take {biggest} bytes, more than the record size limit of {limit} bytes"
        if snapshot_size + self._result_room > limit:
            return (
                f"the aggregate's snapshot would take {snapshot_size} bytes; the record size limit of {limit} bytes "
                f"leaves {limit - self._result_room} for the state (FOLDLINE_MAX_RECORD_BYTES); nothing was written"
            )
        return None

    def _bare_snapshot_size(self, aggregate_id: str) -> int:
        """At least the bytes of a snapshot without its state and results (the key, the longest version,
        the timestamp): measured once per aggregate."""
        record = SnapshotRecord(AggregateId(aggregate_id), 1 << 62, None, self.spec.state.version, (), self._now)
        return len(record.to_bytes())

    def _record(self, env: CommandEnvelope, entry: Entry, result: CommandResult) -> Outcome:
        """Remember the result under the command id, so a resubmission gets it again."""
        entry.remember(result.compact(), self.dedup_window)
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
        outcome.dead_letter, outcome.code = self._letter(key, value, offset, code, message), code
        return outcome

    def _refused(self, key: bytes | None, value: bytes | None, offset: int, refusal: Refusal) -> Outcome:
        """A record not processed: a failed result when a command id is known, always a dead letter. Not
        remembered for deduplication: the record touched no aggregate."""
        result = None
        if refusal.command_id:
            result = CommandResult(
                CommandId(refusal.command_id),
                AggregateId(refusal.aggregate_id),
                Status.FAILED,
                0,
                (),
                clip(refusal.message, MAX_REASON),
                refusal.code,
                False,
                self._now,
            )
        letter = self._letter(key, value, offset, refusal.code, refusal.message)
        return Outcome(result, dead_letter=letter, code=refusal.code)

    def _letter(self, key: bytes | None, value: bytes | None, offset: int, code: str, message: str) -> bytes:
        """The dead letter of a record of this partition."""
        return dead_letter(
            topic=self.topic,
            partition=self.partition,
            offset=offset,
            key=key,
            value=value,
            code=code,
            message=message,
            max_bytes=self.max_record_bytes,
        )

    # -- batch boundaries ----------------------------------------------------------------------------
    def snapshots(self) -> list[tuple[bytes, bytes]]:
        """One snapshot per aggregate touched since the last commit: compaction keeps only the last anyway."""
        out = []
        now = self._now
        for aggregate_id, entry in self._dirty.items():
            if entry.state_json is None:
                entry.state_json = dumps(self.spec.encode_state(entry.state))
            state = orjson.Fragment(entry.state_json)
            while True:
                record = SnapshotRecord(
                    AggregateId(aggregate_id), entry.version, state, self.spec.state.version, tuple(entry.recent), now
                )
                raw = record.to_bytes()
                if len(raw) <= self.max_record_bytes or len(entry.recent) <= 1:
                    break
                # Only results far longer than RESULT_ROOM on an aggregate at the limit get here: the
                # snapshot must fit, so the oldest results are forgotten first.
                dropped = entry.forget_oldest()
                log.warning("snapshot at the size limit: an old result forgotten", command_id=dropped.get("command_id"))
            out.append((aggregate_id.encode(), raw))
        return out

    def committed(self, snapshots: list[tuple[bytes, bytes]], changelog_offset: int) -> None:
        """The transaction with these snapshots committed: the store may now take them."""
        if snapshots:
            self.store.write(snapshots, changelog_offset)
        for aggregate_id, entry in self._dirty.items():
            entry.state_json = None  # measured for this batch; the cache keeps decoded states only
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


def _key_text(key: bytes | None) -> str:
    return "" if key is None else clip(key.decode(errors="replace"), 256)
