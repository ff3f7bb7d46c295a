"""foldline's local state stores (LMDB, SQLite, RocksDB) against the contract in ``foldline.testing``."""

from __future__ import annotations

from pathlib import Path

import pytest

from foldline.store.base import StateStore, open_state_store, store_kinds
from foldline.testing import StateStoreContract


class TestBuiltInStateStores(StateStoreContract):
    @pytest.fixture(autouse=True, params=store_kinds())
    def _kind(self, request: pytest.FixtureRequest) -> None:
        self.kind = request.param

    def open_store(self, path: Path) -> StateStore:
        return open_state_store(self.kind, path)


def test_unknown_kind(tmp_path):
    from foldline import ConfigurationError

    with pytest.raises(ConfigurationError, match="unknown store"):
        open_state_store("cassandra", tmp_path)
