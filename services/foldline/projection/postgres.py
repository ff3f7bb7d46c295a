"""PostgreSQL as a projection database (psycopg 3 with a ``psycopg_pool.ConnectionPool``).

``postgresql://user@host:port/db?schema=name`` keeps every foldline table in that schema (created if
missing); without it the server's ``search_path`` decides. Sessions run in UTC. A batch takes a shared
lock on its revision's catalog row (the switch takes it exclusively) and one advisory lock per
partition, so two replicas or a zombie never apply the same records twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from foldline.errors import ConfigurationError, FoldlineError, StoreUnavailableError
from foldline.projection.base import SqlStore
from foldline.projection.catalog import Session
from foldline.projection.errors import MissingTableError, ProjectionStoreError
from foldline.projection.schema import TableDef
from foldline.projection.sql import PostgresDialect, q, redact

_SCHEMA = re.compile(r"^(?!pg_)[a-z_][a-z0-9_]{0,62}$")
_TRANSIENT = (
    pg_errors.DeadlockDetected,
    pg_errors.SerializationFailure,
    pg_errors.LockNotAvailable,
    pg_errors.QueryCanceled,
    pg_errors.AdminShutdown,
    pg_errors.CannotConnectNow,
)


def _translate(exc: psycopg.Error, sql: str = "") -> FoldlineError:
    if isinstance(exc, pg_errors.UndefinedTable):
        return MissingTableError(str(exc).strip())
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError, *_TRANSIENT)):
        return StoreUnavailableError(f"PostgreSQL: {str(exc).strip()}")
    return ProjectionStoreError(f"PostgreSQL refused {sql[:120]!r}: {str(exc).strip()}")


def split_url(url: str) -> tuple[str, str | None]:
    """The conninfo without foldline's own ``schema`` parameter, and that schema."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    if schema is not None and not _SCHEMA.match(schema):
        raise ConfigurationError(f"schema {schema!r} must be lowercase letters, digits and '_', not starting with pg_")
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    scheme = "postgresql" if parts.scheme in ("postgres", "postgresql") else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, rest, parts.fragment)), schema


class _Session:
    __slots__ = ("cur",)

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self.cur = cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            self.cur.execute(sql, params)
            return self.cur.fetchall() if self.cur.description else []
        except psycopg.Error as exc:
            raise _translate(exc, sql) from exc
        except (OverflowError, UnicodeError) as exc:  # a value the driver cannot bind (an int past 64 bits)
            raise ProjectionStoreError(f"cannot bind a value for {sql[:120]!r}: {exc}") from exc

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            self.cur.executemany(sql, rows)
        except psycopg.Error as exc:
            raise _translate(exc, sql) from exc
        except (OverflowError, UnicodeError) as exc:  # a value the driver cannot bind (an int past 64 bits)
            raise ProjectionStoreError(f"cannot bind a value for {sql[:120]!r}: {exc}") from exc


class PostgresStore(SqlStore):
    dialect = PostgresDialect()
    share_lock = " FOR SHARE OF r"
    update_lock = " FOR UPDATE OF r"

    def __init__(self, url: str, *, pool_size: int = 4, connect_timeout: float = 30.0) -> None:
        self.conninfo, self.schema = split_url(url)
        self._display = redact(self.conninfo)
        try:
            self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
                self.conninfo,
                min_size=1,
                max_size=max(1, pool_size),
                open=False,
                configure=self._configure,
                kwargs={"autocommit": False, "connect_timeout": max(1, int(connect_timeout))},
                name="foldline-projection",
                timeout=connect_timeout,
            )
        except psycopg.ProgrammingError as exc:
            raise ConfigurationError(f"invalid PostgreSQL URL: {exc}") from exc
        try:
            self.pool.open(wait=True, timeout=connect_timeout)
        except PoolTimeout as exc:
            self.pool.close()
            raise StoreUnavailableError(f"cannot connect to PostgreSQL at {self._display}: {exc}") from exc
        if self.schema:
            with self.session(write=True) as s:
                self.lock_view(s, "$schema")
                s.execute(f"CREATE SCHEMA IF NOT EXISTS {q(self.schema)}")
        self.ensure_catalog()

    def __repr__(self) -> str:
        return f"PostgresStore({self._display!r}, schema={self.schema!r})"

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("SET TIME ZONE 'UTC'")
        if self.schema:
            conn.execute(f"SET search_path TO {q(self.schema)}")
        conn.commit()

    @contextmanager
    def session(self, write: bool) -> Iterator[Session]:
        try:
            with self.pool.connection() as conn, conn.cursor() as cur:
                yield _Session(cur)
        except PoolTimeout as exc:
            raise StoreUnavailableError(f"no PostgreSQL connection available: {exc}") from exc
        except psycopg.Error as exc:  # raised by commit or rollback
            raise _translate(exc) from exc

    def lock_view(self, s: Session, view: str) -> None:
        s.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"foldline.view.{view}",))

    def lock_partitions(self, s: Session, table: TableDef, partitions: Sequence[int]) -> None:
        for p in partitions:  # sorted by the caller: no deadlock between two batches
            s.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))",
                (f"foldline.{table.view}.{table.revision}.{table.topic}.{p}",),
            )

    def close(self) -> None:
        self.pool.close()
