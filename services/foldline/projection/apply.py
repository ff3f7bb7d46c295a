"""One batch of source records into one database transaction: decode, skip what is applied, project.

Exactly once into the database, twice over:

- positions: the batch reads (and, in PostgreSQL, locks) the stored position of each partition and
  skips records below it, then stores the new positions in the same transaction as the rows;
- versions: per aggregate the revision keeps the version it has reached; a snapshot or event at or
  below it is skipped. So an event-sourced counter (``Increment``) counts each event once even if a
  zombie process or a rewound consumer delivers it again.

The projection's code runs *before* the write transaction (from positions and versions read just
before), so the database's write lock is held only for the SQL: a rebuilding revision cannot starve
the serving one of a shared SQLite file. If the positions moved in between (another writer of the
same partitions), the batch is planned again inside the transaction.

Snapshot batches keep only the newest snapshot per aggregate (a batch is one transaction, so the
states in between are never visible anyway). Records that cannot be decoded, and records whose
``project`` fails or returns a bad change, are skipped and logged: bad input never stops a view.
A record whose rows the database refuses (a NUL in text for PostgreSQL, a numeric overflow) is
found by the engine and passed over with ``skip``. Every skipped record gets a row in
``foldline_skipped`` (with its cause), in the transaction that moves the position past it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from foldline.errors import DecodeError
from foldline.observability import metrics
from foldline.projection.api import Event, ProjectionSpec, Remember, RowChange, Snapshot
from foldline.projection.base import SqlStore
from foldline.projection.batch import Skip, WriteTx
from foldline.projection.errors import MissingTableError
from foldline.records import EventRecord, SnapshotRecord

log = structlog.get_logger("foldline.projection")

Memo = dict[str, Any] | None
Versions = Callable[[Sequence[str]], dict[str, tuple[int, Memo]]]


class SourceMessage(Protocol):
    """What a batch needs of a Kafka message (``confluent_kafka.Message`` fits)."""

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...

    def value(self) -> bytes | None: ...


@dataclass
class BatchResult:
    state: str = "active"
    records: int = 0
    applied: int = 0
    rows: int = 0
    duplicates: int = 0
    skipped: int = 0
    positions: dict[int, int] = field(default_factory=dict)


@dataclass
class Plan:
    """What one batch will write, computed from the stored positions and versions it was planned on."""

    stored: dict[int, int]
    changes: list[tuple[str, int, RowChange]] = field(default_factory=list)
    finals: dict[str, int] = field(default_factory=dict)
    saves: dict[str, tuple[int, Memo]] = field(default_factory=dict)
    applied: int = 0
    duplicates: int = 0
    skips: list[Skip] = field(default_factory=list)


class Applier:
    def __init__(self, spec: ProjectionSpec) -> None:
        self.spec = spec
        self.project = spec.projection.project
        self._log = log.bind(view=spec.view, revision=spec.revision, aggregate=spec.aggregate)

    def apply(self, store: SqlStore, messages: Sequence[SourceMessage], positions: Mapping[int, int]) -> BatchResult:
        """Project ``messages`` and store ``positions`` (next offset per partition), in one transaction."""
        table = self.spec.table
        partitions = sorted(positions)
        plan: Plan | None = None
        try:
            with store.session(write=False) as s:
                reader = WriteTx(store, s, table)
                plan = self.plan(messages, store.stored_positions(s, table), reader.versions)
        except MissingTableError:
            pass  # a switch dropped this revision's tables: the check under the write lock says so
        with store.begin(table) as tx:
            state = tx.check_revision()
            locked = tx.positions(partitions)
            if plan is None or any(locked.get(p, -1) != plan.stored.get(p, -1) for p in partitions):
                plan = self.plan(messages, locked, tx.versions)  # another writer moved them: plan again
            self.write(tx, plan)
            moved = {p: o for p, o in positions.items() if o > locked.get(p, -1)}
            tx.save_positions(moved)
        self._report(plan.skips)
        return BatchResult(
            state, len(messages), plan.applied, len(plan.changes), plan.duplicates, len(plan.skips), {**locked, **moved}
        )

    def plan(self, messages: Sequence[SourceMessage], stored: Mapping[int, int], versions: Versions) -> Plan:
        """Decode, skip what the stored positions and versions say is applied, and project the rest."""
        plan = Plan(dict(stored))
        fresh = []
        for msg in messages:
            partition, offset = msg.partition(), msg.offset()
            if partition is not None and offset is not None and offset >= stored.get(partition, -1):
                fresh.append(msg)
        plan.duplicates = len(messages) - len(fresh)
        if self.spec.source == "snapshots":
            self._snapshots(fresh, versions, plan)
        else:
            self._events(fresh, versions, plan)
        return plan

    @staticmethod
    def write(tx: WriteTx, plan: Plan) -> None:
        tx.apply(plan.changes)
        tx.delete_stale(plan.finals)
        tx.save_versions(plan.saves)
        tx.save_skipped(plan.skips)

    def skip(self, store: SqlStore, msg: SourceMessage, reason: str, exc: BaseException) -> BatchResult:
        """Pass over one record (its rows refused by the database): a ``foldline_skipped`` row and the
        position past it, in one transaction; nothing if the position is past it already."""
        partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
        item = self._skip(msg, reason, exc)
        try:  # whose record it was, if it decodes at all
            record = (SnapshotRecord if self.spec.source == "snapshots" else EventRecord).from_bytes(msg.value())
            item = Skip(partition, offset, reason, item.error, record.aggregate_id, record.version)
        except DecodeError:
            pass
        with store.begin(self.spec.table) as tx:
            state = tx.check_revision()
            locked = tx.positions([partition])
            fresh = offset >= locked.get(partition, -1)
            if fresh:
                tx.save_skipped([item])
                tx.save_positions({partition: offset + 1})
        if fresh:
            self._report([item])
        positions = {**locked, partition: max(locked.get(partition, -1), offset + 1)}
        return BatchResult(state, 1, 0, 0, 0 if fresh else 1, 1 if fresh else 0, positions)

    @staticmethod
    def _skip(
        msg: SourceMessage, reason: str, exc: BaseException, aggregate_id: str | None = None, version: int | None = None
    ) -> Skip:
        return Skip(
            int(msg.partition() or 0),
            int(msg.offset() or 0),
            reason,
            f"{type(exc).__name__}: {exc}",
            aggregate_id,
            version,
        )

    def _report(self, skips: Sequence[Skip]) -> None:
        for k in skips:
            metrics.PROJECTION_RECORDS_SKIPPED.labels(self.spec.aggregate, self.spec.view, k.reason).inc()
            self._log.warning(
                "record skipped",
                reason=k.reason,
                error=k.error,
                partition=k.partition,
                offset=k.offset,
                aggregate_id=k.aggregate_id,
                version=k.version,
            )

    # -- snapshots -------------------------------------------------------------------------------------
    def _snapshots(self, messages: Sequence[SourceMessage], versions: Versions, plan: Plan) -> None:
        latest: dict[str, tuple[SnapshotRecord, SourceMessage]] = {}
        from_bytes = SnapshotRecord.from_bytes
        for msg in messages:
            try:
                snap = from_bytes(msg.value())
            except (DecodeError, ValueError, TypeError) as exc:
                plan.skips.append(self._skip(msg, "undecodable", exc, *salvage(msg.value())))
                continue
            prev = latest.get(snap.aggregate_id)
            if prev is None or snap.version >= prev[0].version:
                latest[snap.aggregate_id] = (snap, msg)
        known = versions(list(latest))
        decode_state = self.spec.aggregate_spec.decode_state
        project, check = self.project, self.spec.check
        changes, finals, saves = plan.changes, plan.finals, plan.saves
        for aggregate_id, (snap, msg) in latest.items():
            version = snap.version
            reached, memo = known.get(aggregate_id, (0, None))
            if version <= reached:
                plan.duplicates += 1
                continue
            try:
                state = decode_state(snap.schema_version, snap.state)
                out = [
                    check(change) for change in project(Snapshot(aggregate_id, version, state, snap.updated_at)) or ()
                ]
            except Exception as exc:
                plan.skips.append(self._skip(msg, "project_failed", exc, aggregate_id, version))
                continue
            for change in out:
                if isinstance(change, Remember):
                    memo = dict(change.memo)
                else:
                    changes.append((aggregate_id, version, change))
            if aggregate_id in known:  # it may have rows its new state no longer has
                finals[aggregate_id] = version
            saves[aggregate_id] = (version, memo)
            plan.applied += 1

    # -- events ----------------------------------------------------------------------------------------
    def _events(self, messages: Sequence[SourceMessage], versions: Versions, plan: Plan) -> None:
        events = [(e, m) for e, m in ((self._decode(EventRecord.from_bytes, m, plan), m) for m in messages) if e]
        current: dict[str, tuple[int, Memo]] = dict(versions([e.aggregate_id for e, _ in events]))
        decode_event = self.spec.aggregate_spec.decode_event
        decodes = type(self.spec.projection).decode_events
        for rec, msg in events:
            aggregate_id = rec.aggregate_id
            reached, memo = current.get(aggregate_id, (0, None))
            if rec.version <= reached:
                plan.duplicates += 1
                continue
            if rec.version != reached + 1 and reached:
                self._log.warning("events missing", aggregate_id=aggregate_id, reached=reached, got=rec.version)
            try:
                event = decode_event(rec.type, rec.schema_version, rec.payload) if decodes else None
                record = Event(
                    aggregate_id,
                    rec.version,
                    rec.type,
                    event,
                    rec.recorded_at,
                    memo or {},
                    rec.schema_version,
                    rec.payload,
                    rec.command_id,
                )
                out = self._project(record)
            except Exception as exc:
                plan.skips.append(self._skip(msg, "project_failed", exc, aggregate_id, rec.version))
                out = []
            memo = self._collect(out, aggregate_id, rec.version, plan.changes, memo)
            current[aggregate_id] = plan.saves[aggregate_id] = (rec.version, memo)
            plan.applied += 1

    # -- helpers ---------------------------------------------------------------------------------------
    def _project(self, record: Snapshot | Event) -> list[RowChange]:
        out: Any = self.project(record)
        if out is None:
            return []
        return [self.spec.check(change) for change in out]

    @staticmethod
    def _collect(
        out: list[RowChange], aggregate_id: str, version: int, changes: list[tuple[str, int, RowChange]], memo: Memo
    ) -> Memo:
        for change in out:
            if isinstance(change, Remember):
                memo = dict(change.memo)
            else:
                changes.append((aggregate_id, version, change))
        return memo

    @staticmethod
    def _decode(decode: Any, msg: SourceMessage, plan: Plan) -> Any:
        try:
            return decode(msg.value())
        except (DecodeError, ValueError, TypeError) as exc:  # TypeError/ValueError: a field of a wrong type
            plan.skips.append(Applier._skip(msg, "undecodable", exc, *salvage(msg.value())))
            return None


def salvage(value: bytes | None) -> tuple[str | None, int | None]:
    """The aggregate id and version of a record that does not decode, where they can still be read: the
    skipped row then says whose record (and which version) is missing."""
    try:
        data = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    aggregate_id, version = data.get("aggregate_id"), data.get("version")
    return (
        aggregate_id if isinstance(aggregate_id, str) else None,
        version if isinstance(version, int) and not isinstance(version, bool) and 0 < version < 1 << 62 else None,
    )
