"""RocksDB store (rocksdict): an LSM tree; data and offset go in one atomic write batch."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import cast

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteOptions

from foldline.errors import StoreUnavailableError

# The offset lives under a key no aggregate id can have (ids are UTF-8 text, never start with NUL).
_OFFSET = b"\x00foldline.changelog_offset"


class RocksDbStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        # One store per partition: keep each one's memtables and block cache small.
        options.set_write_buffer_size(16 << 20)
        options.set_max_write_buffer_number(2)
        table = BlockBasedOptions()
        table.set_block_cache(Cache(16 << 20))
        options.set_block_based_table_factory(table)
        try:
            self._db = Rdict(str(path / "rocksdb"), options=options)
        except Exception as exc:  # rocksdict raises plain Exception subclasses
            raise StoreUnavailableError(f"cannot open RocksDB store at {path}: {exc}") from exc
        self._write_options = WriteOptions()
        # The WAL buys durability the store does not need; the batch stays atomic without it.
        self._write_options.disable_wal = True  # type: ignore[method-assign,assignment]

    def get(self, key: bytes) -> bytes | None:
        value = self._db.get(key)
        return None if value is None else bytes(value)

    def write(self, items: Iterable[tuple[bytes, bytes]], changelog_offset: int) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in items:
            batch.put(key, value)
        batch.put(_OFFSET, str(changelog_offset).encode())
        try:
            self._db.write(batch, self._write_options)
        except Exception as exc:
            raise StoreUnavailableError(f"RocksDB write failed at {self.path}: {exc}") from exc

    def changelog_offset(self) -> int:
        raw = self._db.get(_OFFSET)
        return 0 if raw is None else int(cast(bytes, raw))

    def count(self) -> int:
        return sum(1 for _ in self.items())

    def estimated_keys(self) -> int:
        """RocksDB's own estimate: counting by iteration would read the whole store."""
        estimate = self._db.property_int_value("rocksdb.estimate-num-keys")
        return max(0, int(estimate or 0) - 1)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self._db.items():
            if key != _OFFSET:
                yield cast(bytes, key), cast(bytes, value)

    def release_memory(self) -> None:
        self._db.flush()  # the memtable goes to disk instead of staying in memory until it fills

    def close(self) -> None:
        self._db.flush()
        self._db.close()
