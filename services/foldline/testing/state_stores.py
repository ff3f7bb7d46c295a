"""The contract every local state store passes (LMDB, SQLite and RocksDB alike), for any store to reuse.

Subclass ``StateStoreContract`` in a test module, name the subclass ``Test...`` and give it
``open_store(path)``; pytest then runs every case against that store::

    class TestMyStore(StateStoreContract):
        def open_store(self, path: Path) -> StateStore:
            return MyStore(path)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from foldline.store.base import StateStore, destroy_store


class StateStoreContract:
    """The cases; ``open_store`` opens (or creates) the store at a path, ``destroy_store`` wipes it."""

    def open_store(self, path: Path) -> StateStore:
        raise NotImplementedError("a StateStoreContract subclass opens its store here")

    def destroy_store(self, path: Path) -> None:
        destroy_store(path)

    def test_empty_store(self, tmp_path: Path) -> None:
        store = self.open_store(tmp_path / "s")
        assert store.get(b"a") is None and store.changelog_offset() == 0 and store.count() == 0
        store.close()

    def test_write_then_read_with_offset(self, tmp_path: Path) -> None:
        store = self.open_store(tmp_path / "s")
        store.write([(b"a", b"1"), (b"b", b"2")], 10)
        store.write([(b"a", b"3")], 12)
        assert store.get(b"a") == b"3" and store.get(b"b") == b"2"
        assert store.changelog_offset() == 12 and store.count() == 2
        assert list(store.items()) == [(b"a", b"3"), (b"b", b"2")]
        store.close()

    def test_survives_reopen(self, tmp_path: Path) -> None:
        store = self.open_store(tmp_path / "s")
        store.write([(f"k{i}".encode(), b"v" * 100) for i in range(1000)], 1000)
        assert 900 <= store.estimated_keys() <= 1100
        store.close()
        again = self.open_store(tmp_path / "s")
        assert again.count() == 1000 and again.changelog_offset() == 1000 and again.get(b"k999") == b"v" * 100
        again.close()

    def test_offset_only_write_moves_offset(self, tmp_path: Path) -> None:
        store = self.open_store(tmp_path / "s")
        store.write([], 7)
        assert store.changelog_offset() == 7 and store.count() == 0
        store.close()

    def test_failed_write_changes_nothing(self, tmp_path: Path) -> None:
        store = self.open_store(tmp_path / "s")
        store.write([(b"a", b"1")], 5)

        def broken():
            yield (b"a", b"2")
            yield (b"b", b"2")
            raise RuntimeError("the batch broke half-way")

        with pytest.raises(RuntimeError):
            store.write(broken(), 9)
        assert store.get(b"a") == b"1" and store.get(b"b") is None and store.changelog_offset() == 5
        store.close()

    def test_destroy_then_open_is_empty(self, tmp_path: Path) -> None:
        store = self.open_store(tmp_path / "s")
        store.write([(b"a", b"1")], 3)
        store.close()
        self.destroy_store(tmp_path / "s")
        fresh = self.open_store(tmp_path / "s")
        assert fresh.count() == 0 and fresh.changelog_offset() == 0
        fresh.close()
