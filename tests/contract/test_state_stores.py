"""One contract every local state store passes: LMDB, SQLite and RocksDB alike."""

from __future__ import annotations

import pytest

from foldline.store.base import destroy_store, open_state_store, store_kinds


@pytest.fixture(params=store_kinds())
def kind(request):
    return request.param


def test_empty_store(kind, tmp_path):
    store = open_state_store(kind, tmp_path / "s")
    assert store.get(b"a") is None and store.changelog_offset() == 0 and store.count() == 0
    store.close()


def test_write_then_read_with_offset(kind, tmp_path):
    store = open_state_store(kind, tmp_path / "s")
    store.write([(b"a", b"1"), (b"b", b"2")], 10)
    store.write([(b"a", b"3")], 12)
    assert store.get(b"a") == b"3" and store.get(b"b") == b"2"
    assert store.changelog_offset() == 12 and store.count() == 2
    assert list(store.items()) == [(b"a", b"3"), (b"b", b"2")]
    store.close()


def test_survives_reopen(kind, tmp_path):
    store = open_state_store(kind, tmp_path / "s")
    store.write([(f"k{i}".encode(), b"v" * 100) for i in range(1000)], 1000)
    assert 900 <= store.estimated_keys() <= 1100
    store.close()
    again = open_state_store(kind, tmp_path / "s")
    assert again.count() == 1000 and again.changelog_offset() == 1000 and again.get(b"k999") == b"v" * 100
    again.close()


def test_offset_only_write_moves_offset(kind, tmp_path):
    store = open_state_store(kind, tmp_path / "s")
    store.write([], 7)
    assert store.changelog_offset() == 7 and store.count() == 0
    store.close()


def test_failed_write_changes_nothing(kind, tmp_path):
    store = open_state_store(kind, tmp_path / "s")
    store.write([(b"a", b"1")], 5)

    def broken():
        yield (b"a", b"2")
        yield (b"b", b"2")
        raise RuntimeError("the batch broke half-way")

    with pytest.raises(RuntimeError):
        store.write(broken(), 9)
    assert store.get(b"a") == b"1" and store.get(b"b") is None and store.changelog_offset() == 5
    store.close()


def test_destroy_then_open_is_empty(kind, tmp_path):
    store = open_state_store(kind, tmp_path / "s")
    store.write([(b"a", b"1")], 3)
    store.close()
    destroy_store(tmp_path / "s")
    fresh = open_state_store(kind, tmp_path / "s")
    assert fresh.count() == 0 and fresh.changelog_offset() == 0
    fresh.close()


def test_unknown_kind(tmp_path):
    from foldline import ConfigurationError

    with pytest.raises(ConfigurationError, match="unknown store"):
        open_state_store("cassandra", tmp_path)
