"""The statements of one batch inside one transaction: revision check, positions, versions, rows.

``SqlStore.begin`` hands a ``WriteTx`` to the engine; everything it writes commits together or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from foldline.projection.api import Delete, Increment, Remember, RowChange, Upsert
from foldline.projection.catalog import Session, read_positions, revision_state
from foldline.projection.errors import ProjectionStoreError
from foldline.projection.schema import SYSTEM_COLUMNS, TableDef
from foldline.projection.sql import Dialect, q
from foldline.records import now_iso

_CHUNK = 500


@dataclass(frozen=True)
class Skip:
    """A record a revision passed over: where it was, whose it was (when known), and why."""

    partition: int
    offset: int
    reason: str
    error: str
    aggregate_id: str | None = None
    version: int | None = None


def _text(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    return value[:limit].replace("\x00", "\\x00").encode("utf-8", errors="replace").decode()


class Locking(Protocol):
    """What a batch needs of its store (``SqlStore``): the dialect and the dialect's locks."""

    dialect: Dialect
    share_lock: str

    def lock_partitions(self, s: Session, table: TableDef, partitions: Sequence[int]) -> None: ...


class WriteTx:
    """The statements of one batch, inside one transaction."""

    def __init__(self, store: Locking, session: Session, table: TableDef) -> None:
        self.store, self.s, self.table = store, session, table
        self.dialect = store.dialect
        self._sql: dict[Any, str] = {}

    def check_revision(self) -> str:
        """This revision's state (active or building), holding the lock a switch waits for;
        RevisionRetiredError if it must stop."""
        return revision_state(self.s, self.dialect.param, self.table, self.store.share_lock)

    def positions(self, partitions: Sequence[int] = ()) -> dict[int, int]:
        """The stored positions, after locking the given partitions against concurrent batches."""
        self.store.lock_partitions(self.s, self.table, sorted(set(partitions)))
        t = self.table
        return read_positions(self.s, self.dialect.param, t.view, t.revision, t.topic)

    def versions(self, aggregate_ids: Sequence[str]) -> dict[str, tuple[int, dict[str, Any] | None]]:
        out: dict[str, tuple[int, dict[str, Any] | None]] = {}
        ids = list(dict.fromkeys(aggregate_ids))
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            sql = (
                f"SELECT aggregate_id, version, memo FROM {q(self.table.versions_table)} WHERE "
                + self.dialect.in_list("aggregate_id", len(chunk))
            )
            for aid, version, memo in self.s.execute(sql, self.dialect.in_params(chunk)):
                out[aid] = (int(version), json.loads(memo) if memo else None)
        return out

    def apply(self, changes: Sequence[tuple[str, int, RowChange]]) -> int:
        """Write row changes in order, consecutive ones of one shape as one ``executemany``."""
        t, written = self.table, 0
        convert = self.dialect.converters(t)
        cols = list(zip((c.name for c in t.columns), convert, strict=True))
        by_name = dict(cols)
        # Columns whose values bind as they are (text, and integer) skip the conversion call.
        plain = [c.name for c in t.columns if c.name not in SYSTEM_COLUMNS and self.dialect.binds_as_is(c.type)]
        user = [(n, f) for n, f in cols if n not in SYSTEM_COLUMNS]
        fast = len(plain) == len(user)
        run_key: Any = None
        run: list[list[Any]] = []
        for aggregate_id, version, change in changes:
            if isinstance(change, Upsert):
                key: Any = "upsert"
                values = change.values
                row = (
                    [values.get(n) for n, _ in user]
                    if fast
                    else [values.get(n) if n in plain else f(values.get(n)) for n, f in user]
                )
            elif isinstance(change, Delete):
                key = "delete"
                row = [by_name[k](change.key[k]) for k in t.key]
            elif isinstance(change, Increment):
                key = ("inc", tuple(change.add), tuple(change.set))
                row = [by_name[k](change.key[k]) for k in t.key]
                row += [by_name[n](change.add[n]) for n in change.add]
                row += [by_name[n](change.set[n]) for n in change.set]
            elif isinstance(change, Remember):
                continue
            else:
                raise ProjectionStoreError(f"not a row change: {change!r}")
            row += [aggregate_id, version]
            if key != run_key and run:
                self.s.executemany(self._statement(run_key), run)
                run = []
            run_key = key
            run.append(row)
            written += 1
        if run:
            self.s.executemany(self._statement(run_key), run)
        return written

    def _statement(self, key: Any) -> str:
        sql = self._sql.get(key)
        if sql is None:
            if key == "upsert":
                sql = self.dialect.upsert(self.table)
            elif key == "delete":
                sql = self.dialect.delete(self.table)
            else:
                sql = self.dialect.increment(self.table, key[1], key[2])
            self._sql[key] = sql
        return sql

    def delete_stale(self, finals: Mapping[str, int]) -> None:
        """Delete each aggregate's rows older than its final version: what its snapshot no longer has."""
        if finals:
            self.s.executemany(self.dialect.delete_stale(self.table), [[a, v] for a, v in finals.items()])

    def save_versions(self, items: Mapping[str, tuple[int, Mapping[str, Any] | None]]) -> None:
        if items:
            rows = [
                [a, v, None if m is None else json.dumps(m, default=str, separators=(",", ":"))]
                for a, (v, m) in items.items()
            ]
            self.s.executemany(self.dialect.save_version(self.table), rows)

    def save_skipped(self, skips: Sequence[Skip]) -> None:
        """A row in ``foldline_skipped`` per record passed over, with its cause (written as text any
        database takes: a NUL or a lone surrogate in an id or a message is escaped)."""
        if skips:
            t, now = self.table, now_iso()
            rows = [
                [
                    t.view,
                    t.revision,
                    t.topic,
                    k.partition,
                    k.offset,
                    _text(k.aggregate_id, 512),
                    k.version,
                    k.reason,
                    _text(k.error, 2000),
                    now,
                ]
                for k in skips
            ]
            self.s.executemany(self.dialect.save_skipped(), rows)

    def save_positions(self, positions: Mapping[int, int]) -> None:
        """Positions only move forward: a smaller offset than the stored one is ignored."""
        if positions:
            t, now = self.table, now_iso()
            rows = [[t.view, t.revision, t.topic, p, o, now] for p, o in sorted(positions.items())]
            self.s.executemany(self.dialect.save_position(), rows)
