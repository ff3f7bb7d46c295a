"""The projection database, dialect-neutral: catalog, revisions, exactly-once batches, reads.

Tables (both targets):

    foldline_views      view -> active_revision          one row per view; the switch updates it
    foldline_revisions  (view, revision) -> state         building | active | retired, and the definition
    foldline_positions  (view, revision, topic, partition) -> next_offset, written with the rows
    <view>__r<rev>      the rows of one revision          plus aggregate_id, aggregate_version
    <view>__r<rev>__agg aggregate_id -> version, memo     how far the revision got per aggregate

A batch runs in one transaction (``begin``): it checks its revision is still wanted, reads and locks
its positions, writes rows, versions and positions, and commits, so a crash anywhere leaves the
database exactly as before the batch or exactly after it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from foldline.errors import AggregateDefinitionError, StoreUnavailableError
from foldline.projection.batch import WriteTx
from foldline.projection.catalog import Session, read_positions, revision_state
from foldline.projection.errors import (
    InvalidQueryError,
    MissingTableError,
    RevisionRetiredError,
    UnknownColumnError,
    UnknownViewError,
)
from foldline.projection.schema import TableDef, check_view_name, table_name
from foldline.projection.sql import CATALOG, Dialect, parse_filter, q
from foldline.records import now_iso

T = TypeVar("T")
#: The most rows one ``read_rows`` call returns (the gateway pages by at most ``MAX_PAGE_ROWS``).
MAX_LIMIT = 10_000
#: The largest offset a read may skip: a BIGINT, as both databases bind it.
MAX_OFFSET = (1 << 63) - 1


@dataclass(frozen=True)
class Registration:
    """What ``register`` found: this revision's state and the view's active revision."""

    state: str
    active_revision: int | None


@dataclass(frozen=True)
class RevisionInfo:
    revision: int
    state: str
    table: TableDef
    positions: dict[int, int]
    created_at: str
    switched_at: str | None


@dataclass(frozen=True)
class ViewInfo:
    view: str
    active_revision: int | None
    revisions: list[RevisionInfo] = field(default_factory=list)

    def revision(self, number: int) -> RevisionInfo | None:
        return next((r for r in self.revisions if r.revision == number), None)


class SqlStore:
    """A projection database; subclasses open sessions and translate their driver's errors."""

    dialect: Dialect
    #: Appended to the batch's revision check: PostgreSQL locks the row the switch updates.
    share_lock = ""
    #: Appended to the switch's read of the serving revision: PostgreSQL waits for its batches in flight.
    update_lock = ""

    # -- driver hooks --------------------------------------------------------------------------------
    def session(self, write: bool) -> AbstractContextManager[Session]:
        raise NotImplementedError

    def lock_view(self, s: Session, view: str) -> None:
        """Serialise registration and switches of one view (SQLite's write lock already does)."""

    def lock_partitions(self, s: Session, table: TableDef, partitions: Sequence[int]) -> None:
        """Serialise batches of the same partitions (SQLite's write lock already does)."""

    def close(self) -> None:
        raise NotImplementedError

    def ensure_catalog(self) -> None:
        with self.session(write=True) as s:
            self.lock_view(s, "$catalog")
            for ddl in CATALOG:
                s.execute(ddl)

    # -- revisions -----------------------------------------------------------------------------------
    def register(self, table: TableDef) -> Registration:
        """Record this revision and create its tables; the first revision of a view becomes active at once.

        Raises ``RevisionRetiredError`` for a revision that was retired or is older than the active one,
        and ``AggregateDefinitionError`` when the same revision number was registered with other columns.
        """
        with self.session(write=True) as s:
            self.lock_view(s, table.view)
            s.execute(
                "INSERT INTO foldline_views (view, active_revision, updated_at) VALUES "
                f"({self._p(3)}) ON CONFLICT (view) DO NOTHING",
                (table.view, None, now_iso()),
            )
            active = s.execute(
                f"SELECT active_revision FROM foldline_views WHERE view = {self.dialect.param}", (table.view,)
            )[0][0]
            rows = s.execute(
                "SELECT state, definition FROM foldline_revisions WHERE view = "
                f"{self.dialect.param} AND revision = {self.dialect.param}",
                (table.view, table.revision),
            )
            if rows:
                state, definition = rows[0]
                if definition != table.definition():
                    raise AggregateDefinitionError(
                        f"revision {table.revision} of view {table.view!r} was registered with another definition"
                        f" (columns, key, source or aggregate); give the changed projection a new revision"
                    )
                if state == "retired":
                    raise RevisionRetiredError(
                        f"revision {table.revision} of {table.view!r} was retired; deploy a revision above {active}"
                    )
            else:
                if active is not None and active > table.revision:
                    raise RevisionRetiredError(
                        f"view {table.view!r} is at revision {active}; revision "
                        f"{table.revision} is older: deploy a revision above {active}"
                    )
                state = "building"
                s.execute(
                    "INSERT INTO foldline_revisions (view, revision, state, definition, created_at) "
                    f"VALUES ({self._p(5)})",
                    (table.view, table.revision, state, table.definition(), now_iso()),
                )
            for ddl in self.dialect.create_table(table):
                s.execute(ddl)
            if active is None:
                self._activate(s, table.view, table.revision, {})
                state, active = "active", table.revision
        if state == "active":
            self.drop_retired(table.view)  # tables a crash may have left between a switch and its drop
        return Registration(state, active)

    def switch(self, table: TableDef, targets: Mapping[int, int]) -> bool:
        """Make this revision the active one if its stored positions reached ``targets`` and the serving
        revision's positions; atomic.

        Older revisions are retired in the same transaction and their tables dropped right after.
        Returns False (and changes nothing) while some partition is still behind its target, or behind
        where the serving revision is now: reads never go back in time across a switch.
        """
        p = self.dialect.param
        with self.session(write=True) as s:
            self.lock_view(s, table.view)
            if revision_state(s, p, table) == "active":
                return True
            positions = read_positions(s, p, table.view, table.revision, table.topic)
            if any(positions.get(part, 0) < end for part, end in targets.items()):
                return False
            if self._behind_serving(s, table, positions):
                return False
            self._activate(s, table.view, table.revision, positions)
        self.drop_retired(table.view)
        return True

    def _behind_serving(self, s: Session, table: TableDef, positions: Mapping[int, int]) -> bool:
        """Whether the serving revision has applied records this one has not, read under a lock that waits
        for the serving revision's batches in flight and holds off new ones until the switch commits."""
        p = self.dialect.param
        rows = s.execute(
            "SELECT r.revision, r.definition FROM foldline_views v JOIN foldline_revisions r ON r.view = v.view "
            f"AND r.revision = v.active_revision WHERE v.view = {p}{self.update_lock}",
            (table.view,),
        )
        if not rows or int(rows[0][0]) == table.revision:
            return False
        serving = TableDef.from_definition(table.view, int(rows[0][0]), rows[0][1])
        if serving.topic != table.topic:  # another source: offsets do not compare; the end targets decide
            return False
        theirs = read_positions(s, p, table.view, serving.revision, serving.topic)
        return any(positions.get(part, 0) < offset for part, offset in theirs.items())

    def _activate(self, s: Session, view: str, revision: int, positions: Mapping[int, int]) -> None:
        p, now = self.dialect.param, now_iso()
        s.execute(
            f"UPDATE foldline_views SET active_revision = {p}, updated_at = {p} WHERE view = {p}", (revision, now, view)
        )
        s.execute(
            f"UPDATE foldline_revisions SET state = 'active', switched_at = {p}, switch_positions = {p} "
            f"WHERE view = {p} AND revision = {p}",
            (now, json.dumps({str(k): v for k, v in sorted(positions.items())}), view, revision),
        )
        s.execute(
            f"UPDATE foldline_revisions SET state = 'retired' WHERE view = {p} AND revision < {p} "
            "AND state <> 'retired'",
            (view, revision),
        )
        s.execute(f"DELETE FROM foldline_positions WHERE view = {p} AND revision < {p}", (view, revision))

    def drop_retired(self, view: str) -> list[int]:
        """Drop the tables of the view's retired revisions (idempotent); returns their numbers."""
        p = self.dialect.param
        with self.session(write=True) as s:
            self.lock_view(s, view)
            retired = [
                r
                for (r,) in s.execute(
                    f"SELECT revision FROM foldline_revisions WHERE view = {p} AND state = 'retired'", (view,)
                )
            ]
            for revision in retired:
                for ddl in self.dialect.drop_table(table_name(view, revision)):
                    s.execute(ddl)
        return retired

    # -- one batch -------------------------------------------------------------------------------------
    @contextmanager
    def begin(self, table: TableDef) -> Iterator[WriteTx]:
        """A batch's transaction: committed when the block ends, rolled back if it raises."""
        with self.session(write=True) as s:
            yield WriteTx(self, s, table)

    def revision_state(self, table: TableDef) -> str:
        """Active or building; RevisionRetiredError once a newer revision took over (no lock taken)."""
        try:
            with self.session(write=False) as s:
                return revision_state(s, self.dialect.param, table)
        except MissingTableError as exc:
            raise RevisionRetiredError(f"the catalog of {table.view!r} is gone") from exc

    # -- catalog reads ---------------------------------------------------------------------------------
    def positions(self, view: str, revision: int, topic: str) -> dict[int, int]:
        with self.session(write=False) as s:
            return read_positions(s, self.dialect.param, view, revision, topic)

    def stored_positions(self, s: Session, table: TableDef) -> dict[int, int]:
        """The positions of a revision, read in an open session (no lock)."""
        return read_positions(s, self.dialect.param, table.view, table.revision, table.topic)

    def views(self) -> list[str]:
        try:
            with self.session(write=False) as s:
                return [v for (v,) in s.execute("SELECT view FROM foldline_views ORDER BY view")]
        except MissingTableError:
            return []

    def view_info(self, view: str) -> ViewInfo:
        p = self.dialect.param
        try:
            with self.session(write=False) as s:
                found = s.execute(f"SELECT active_revision FROM foldline_views WHERE view = {p}", (view,))
                if not found:
                    raise UnknownViewError(f"no view named {view!r}", details={"view": view})
                revisions = []
                for revision, state, definition, created, switched in s.execute(
                    "SELECT revision, state, definition, created_at, switched_at FROM foldline_revisions "
                    f"WHERE view = {p} ORDER BY revision",
                    (view,),
                ):
                    table = TableDef.from_definition(view, revision, definition)
                    positions = read_positions(s, p, view, revision, table.topic)
                    revisions.append(RevisionInfo(revision, state, table, positions, created, switched))
        except MissingTableError:
            raise UnknownViewError(f"no view named {view!r}", details={"view": view}) from None
        return ViewInfo(view, found[0][0], revisions)

    def skipped_records(
        self,
        *,
        topics: Sequence[str] = (),
        views: Sequence[str] = (),
        aggregate_id: str | None = None,
        unattributed: bool = False,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """The newest records projectors passed over (``foldline_skipped``): the read side's dead letters.
        Filtered by source topics and/or views, by one aggregate, or (``unattributed``) to those whose
        aggregate could not be read."""
        self._check_page(limit, 0)
        p = self.dialect.param
        where, params = [], []
        for column, values in (("topic", topics), ("view", views)):
            if values:
                where.append(f"{column} IN ({self._p(len(values))})")
                params += list(values)
        if aggregate_id is not None:
            where.append(f"aggregate_id = {p}")
            params.append(aggregate_id)
        if unattributed:
            where.append("aggregate_id IS NULL")
        names = ("view", "revision", "topic", "partition", "offset", "aggregate_id", "version", "reason", "error")
        sql = (
            f"SELECT {', '.join(q(n) for n in names)}, recorded_at FROM foldline_skipped"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + f' ORDER BY recorded_at DESC, topic, "partition", "offset" DESC LIMIT {p}'
        )
        try:
            with self.session(write=False) as s:
                rows = s.execute(sql, [*params, limit])
        except MissingTableError:
            return []
        return [dict(zip((*names, "recorded_at"), row, strict=True)) for row in rows]

    # -- the reader's interface (ProjectionTarget) -------------------------------------------------------
    def read_rows(
        self, view: str, *, filters: Mapping[str, Any], limit: int = 100, offset: int = 0, order_by: str | None = None
    ) -> list[dict[str, Any]]:
        self._check_page(limit, offset)
        return self._with_view(view, lambda s, table: self._rows(s, table, filters, limit, offset, order_by))

    @staticmethod
    def _check_page(limit: int, offset: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise InvalidQueryError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
            raise InvalidQueryError(f"offset must be an integer from 0 to {MAX_OFFSET}, got {offset!r}")

    def _rows(
        self, s: Session, table: TableDef, filters: Mapping[str, Any], limit: int, offset: int, order_by: str | None
    ) -> list[dict[str, Any]]:
        sql, params = self._select(table, filters, limit, offset, order_by)
        convert = [(c.name, c.type) for c in table.columns]
        from_db = self.dialect.from_db
        return [
            {name: from_db(kind, value) for (name, kind), value in zip(convert, row, strict=True)}
            for row in s.execute(sql, params)
        ]

    def aggregate_version(self, view: str, aggregate_id: str) -> int | None:
        return self._with_view(view, lambda s, table: self._version(s, table, aggregate_id))

    def read_rows_at_version(
        self,
        view: str,
        aggregate_id: str,
        min_version: int,
        *,
        filters: Mapping[str, Any],
        limit: int = 100,
        offset: int = 0,
        order_by: str | None = None,
    ) -> tuple[int | None, list[dict[str, Any]] | None]:
        """The version the view reached for ``aggregate_id`` and, once it is at least ``min_version``, the
        rows: both from the one table the view resolved to, in one session. Rows are None below it."""
        self._check_page(limit, offset)

        def query(s: Session, table: TableDef) -> tuple[int | None, list[dict[str, Any]] | None]:
            version = self._version(s, table, aggregate_id)
            if version is None or version < min_version:
                return version, None
            return version, self._rows(s, table, filters, limit, offset, order_by)

        return self._with_view(view, query)

    def _version(self, s: Session, table: TableDef, aggregate_id: str) -> int | None:
        rows = s.execute(
            f"SELECT version FROM {q(table.versions_table)} WHERE aggregate_id = {self.dialect.param}", (aggregate_id,)
        )
        return int(rows[0][0]) if rows else None

    def columns(self, view: str) -> list[str]:
        return self._with_view(view, lambda s, table: table.column_names)

    def active_table(self, view: str) -> TableDef:
        return self._with_view(view, lambda s, table: table)

    def _with_view(self, view: str, query: Callable[[Session, TableDef], T]) -> T:
        if not isinstance(view, str) or not view:
            raise UnknownViewError(f"no view named {view!r}", details={"view": view})
        for _ in range(3):  # a switch may drop the table between resolving the view and reading it
            try:
                with self.session(write=False) as s:
                    table = self._resolve(s, view)
                    return query(s, table)
            except MissingTableError:
                continue
        raise StoreUnavailableError(f"view {view!r} kept changing its table while being read; try again")

    def _resolve(self, s: Session, view: str) -> TableDef:
        p = self.dialect.param
        try:
            check_view_name(view)
            rows = s.execute(
                f"SELECT r.revision, r.definition FROM foldline_views v JOIN foldline_revisions r "
                f"ON r.view = v.view AND r.revision = v.active_revision WHERE v.view = {p}",
                (view,),
            )
        except (MissingTableError, AggregateDefinitionError):
            rows = []
        if not rows:
            raise UnknownViewError(f"no view named {view!r}", details={"view": view})
        return TableDef.from_definition(view, int(rows[0][0]), rows[0][1])

    def _select(
        self, table: TableDef, filters: Mapping[str, Any], limit: int, offset: int, order_by: str | None
    ) -> tuple[str, list[Any]]:
        cols = table.column_map()
        where, params = [], []
        for name, raw in filters.items():
            column = cols.get(name)
            if column is None:
                raise UnknownColumnError(f"view {table.view!r} has no column {name!r}", details={"field": name})
            where.append(self.dialect.filter_expr(column))
            params.append(self.dialect.filter_param(column, parse_filter(column, raw)))
        order = []
        if order_by:
            name, desc = (order_by[1:], True) if order_by.startswith("-") else (order_by, False)
            column = cols.get(name)
            if column is None:
                raise UnknownColumnError(
                    f"cannot order {table.view!r} by {name!r}: no such column", details={"field": name}
                )
            order.append(self.dialect.order_expr(column) + (" DESC" if desc else ""))
        order += [q(k) for k in table.key]
        sql = (
            f"SELECT {', '.join(q(c.name) for c in table.columns)} FROM {q(table.table)}"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + f" ORDER BY {', '.join(order)} LIMIT {self.dialect.param} OFFSET {self.dialect.param}"
        )
        return sql, [*params, limit, offset]

    def _p(self, n: int) -> str:
        return ", ".join([self.dialect.param] * n)
