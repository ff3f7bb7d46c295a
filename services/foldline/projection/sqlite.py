"""SQLite as a projection database: the embedded default (stdlib ``sqlite3``, WAL, one file).

One connection per thread (readers such as the gateway call from a thread pool); writers take the
database's write lock up front (``BEGIN IMMEDIATE``), so batches, registrations and switches of every
projector sharing the file are serialised, and readers keep reading their snapshot meanwhile (WAL).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from foldline.errors import FoldlineError, StoreUnavailableError
from foldline.projection.base import SqlStore
from foldline.projection.catalog import Session
from foldline.projection.errors import MissingTableError, ProjectionStoreError
from foldline.projection.sql import SqliteDialect, decimal_add


def _translate(exc: sqlite3.Error, sql: str = "") -> FoldlineError:
    message = str(exc)
    if "no such table" in message:
        return MissingTableError(message)
    if isinstance(exc, sqlite3.OperationalError):  # locked, busy, I/O, full disk: may pass
        return StoreUnavailableError(f"SQLite: {message}")
    return ProjectionStoreError(f"SQLite refused {sql[:120]!r}: {message}")


class _Session:
    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _translate(exc, sql) from exc
        except (OverflowError, UnicodeError) as exc:  # a value the driver cannot bind (an int past 64 bits)
            raise ProjectionStoreError(f"cannot bind a value for {sql[:120]!r}: {exc}") from exc

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            self.conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise _translate(exc, sql) from exc
        except (OverflowError, UnicodeError) as exc:  # a value the driver cannot bind (an int past 64 bits)
            raise ProjectionStoreError(f"cannot bind a value for {sql[:120]!r}: {exc}") from exc


class SqliteStore(SqlStore):
    dialect = SqliteDialect()

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 30_000) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailableError(f"cannot create the directory of {self.path}: {exc}") from exc
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        self.ensure_catalog()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise StoreUnavailableError(f"{self!r} is closed")
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        while True:
            try:
                conn = self._connect()
                break
            except sqlite3.OperationalError as exc:
                # Switching a new file to WAL needs a moment alone; processes opening it together wait.
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                    raise StoreUnavailableError(f"cannot open SQLite database {self.path}: {exc}") from exc
                time.sleep(0.05)
            except sqlite3.Error as exc:
                raise StoreUnavailableError(f"cannot open SQLite database {self.path}: {exc}") from exc
        with self._lock:
            self._connections.append(conn)
        self._local.conn = conn
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=self.busy_timeout_ms / 1000
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.create_function("foldline_decimal_add", 2, decimal_add, deterministic=True)
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def session(self, write: bool) -> Iterator[Session]:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.Error as exc:
            raise _translate(exc) from exc
        try:
            yield _Session(conn)
        except BaseException:
            with suppress(sqlite3.Error):  # the transaction may be gone already (the connection failed)
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise _translate(exc) from exc

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()
