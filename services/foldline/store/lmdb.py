"""LMDB store: memory-mapped B+tree, one environment per partition, copy-on-write transactions."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import lmdb

from foldline.errors import StoreCorruptedError, StoreUnavailableError

_OFFSET = b"offset"
# Sparse on Linux: the map size is an upper bound of the file, not memory that is taken.
_MAP_SIZE = 64 << 30


class LmdbStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._open()

    def _open(self) -> None:
        path = self.path
        try:
            # sync=False: a crash may lose the last commits but never mixes two of them; restore re-reads.
            self._env = lmdb.open(
                str(path),
                map_size=_MAP_SIZE,
                max_dbs=2,
                sync=False,
                metasync=False,
                readahead=False,
                writemap=False,
            )
        except lmdb.Error as exc:
            raise StoreUnavailableError(f"cannot open LMDB store at {path}: {exc}") from exc
        self._data = self._env.open_db(b"data")
        self._meta = self._env.open_db(b"meta")

    def get(self, key: bytes) -> bytes | None:
        with self._env.begin(db=self._data, buffers=False) as txn:
            value = txn.get(key)
        return None if value is None else bytes(value)

    def write(self, items: Iterable[tuple[bytes, bytes]], changelog_offset: int) -> None:
        try:
            with self._env.begin(write=True) as txn:
                cursor = txn.cursor(db=self._data)
                cursor.putmulti(items, dupdata=False, overwrite=True)
                txn.put(_OFFSET, str(changelog_offset).encode(), db=self._meta)
        except lmdb.Error as exc:
            raise StoreUnavailableError(f"LMDB write failed at {self.path}: {exc}") from exc

    def changelog_offset(self) -> int:
        with self._env.begin(db=self._meta) as txn:
            raw = txn.get(_OFFSET)
        try:
            return 0 if raw is None else int(bytes(raw))
        except ValueError as exc:
            raise StoreCorruptedError(f"LMDB store at {self.path} holds a bad offset {raw!r}") from exc

    def count(self) -> int:
        with self._env.begin(db=self._data) as txn:
            return int(txn.stat(self._data)["entries"])

    def estimated_keys(self) -> int:
        return self.count()

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        with self._env.begin(db=self._data) as txn:
            for key, value in txn.cursor():
                yield bytes(key), bytes(value)

    def release_memory(self) -> None:
        """Unmap and map again: a restore touches every page, and the mapped pages count as resident."""
        self._env.close()
        self._open()

    def close(self) -> None:
        self._env.close()
