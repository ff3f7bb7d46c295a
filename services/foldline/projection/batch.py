"""The statements of one batch inside one transaction: revision check, positions, versions, rows.

``SqlStore.begin`` hands a ``WriteTx`` to the engine; everything it writes commits together or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from foldline.projection.api import Delete, Increment, Remember, RowChange, Upsert
from foldline.projection.errors import ProjectionStoreError, RevisionRetiredError
from foldline.projection.schema import SYSTEM_COLUMNS, TableDef
from foldline.projection.sql import q
from foldline.records import now_iso

if TYPE_CHECKING:
    from foldline.projection.base import Session, SqlStore

_CHUNK = 500


class WriteTx:
    """The statements of one batch, inside one transaction."""

    def __init__(self, store: SqlStore, session: Session, table: TableDef) -> None:
        self.store, self.s, self.table = store, session, table
        self.dialect = store.dialect
        self._sql: dict[Any, str] = {}

    def check_revision(self, lock: bool = True) -> str:
        """This revision's state (active or building); RevisionRetiredError if it must stop."""
        t, p = self.table, self.dialect.param
        rows = self.s.execute(f"SELECT r.state, v.active_revision FROM foldline_revisions r JOIN foldline_views v "
                              f"ON v.view = r.view WHERE r.view = {p} AND r.revision = {p}"
                              f"{self.store.share_lock if lock else ''}", (t.view, t.revision))
        state, active = rows[0] if rows else ("retired", None)
        if state == "retired" or (state == "building" and active is not None and active > t.revision):
            raise RevisionRetiredError(f"revision {t.revision} of {t.view!r} was superseded by revision {active}")
        return str(state)

    def positions(self, partitions: Sequence[int] = ()) -> dict[int, int]:
        """The stored positions, after locking the given partitions against concurrent batches."""
        self.store.lock_partitions(self.s, self.table, sorted(set(partitions)))
        return self.store._positions(self.s, self.table.view, self.table.revision, self.table.topic)

    def versions(self, aggregate_ids: Sequence[str]) -> dict[str, tuple[int, dict[str, Any] | None]]:
        out: dict[str, tuple[int, dict[str, Any] | None]] = {}
        ids = list(dict.fromkeys(aggregate_ids))
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            sql = (f"SELECT aggregate_id, version, memo FROM {q(self.table.versions_table)} WHERE "
                   + self.dialect.in_list("aggregate_id", len(chunk)))
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
                row = [values.get(n) for n, _ in user] if fast else [
                    values.get(n) if n in plain else f(values.get(n)) for n, f in user]
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
            rows = [[a, v, None if m is None else json.dumps(m, default=str, separators=(",", ":"))]
                    for a, (v, m) in items.items()]
            self.s.executemany(self.dialect.save_version(self.table), rows)

    def save_positions(self, positions: Mapping[int, int]) -> None:
        """Positions only move forward: a smaller offset than the stored one is ignored."""
        if positions:
            t, now = self.table, now_iso()
            rows = [[t.view, t.revision, t.topic, p, o, now] for p, o in sorted(positions.items())]
            self.s.executemany(self.dialect.save_position(), rows)
