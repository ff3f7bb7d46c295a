"""SQLite store: one database file per partition in WAL mode; stdlib only."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

from foldline.errors import StoreUnavailableError


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path / "store.sqlite3", isolation_level=None, check_same_thread=False)
            # NORMAL under WAL keeps commits atomic; losing the last ones to a power cut only lengthens restore.
            self._db.executescript(
                """
                PRAGMA journal_mode=WAL;
                PRAGMA synchronous=NORMAL;
                CREATE TABLE IF NOT EXISTS snapshots (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
                """
            )
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"cannot open SQLite store at {path}: {exc}") from exc

    def get(self, key: bytes) -> bytes | None:
        row = self._db.execute("SELECT value FROM snapshots WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def write(self, items: Iterable[tuple[bytes, bytes]], changelog_offset: int) -> None:
        try:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO snapshots (key, value) VALUES (?, ?)", items)
            self._db.execute(
                "INSERT OR REPLACE INTO meta (name, value) VALUES ('changelog_offset', ?)", (changelog_offset,)
            )
            self._db.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreUnavailableError(f"SQLite write failed at {self.path}: {exc}") from exc
            raise

    def changelog_offset(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE name = 'changelog_offset'").fetchone()
        return 0 if row is None else int(row[0])

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM snapshots").fetchone()[0])

    def estimated_keys(self) -> int:
        return self.count()

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self._db.execute("SELECT key, value FROM snapshots ORDER BY key"):
            yield bytes(key), bytes(value)

    def release_memory(self) -> None:
        self._db.execute("PRAGMA shrink_memory")

    def close(self) -> None:
        self._db.close()
