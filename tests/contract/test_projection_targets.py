"""foldline's projection databases against the contract in ``foldline.testing``: SQLite (a file) and
PostgreSQL (the real dev server; its cases fail, never skip, when the server cannot start)."""

from __future__ import annotations

import pytest

from foldline.projection import ProjectionTarget, open_store, open_target
from foldline.projection.base import SqlStore
from foldline.testing import ProjectionStoreContract


class TestSqlite(ProjectionStoreContract):
    @pytest.fixture(autouse=True)
    def _database(self, tmp_path):
        self.url = f"sqlite:///{tmp_path / 'views.db'}"

    def open_store(self) -> SqlStore:
        return open_store(self.url)

    def open_target(self) -> ProjectionTarget:
        return open_target(self.url)


@pytest.mark.postgres
class TestPostgres(TestSqlite):
    @pytest.fixture(autouse=True)
    def _database(self, postgres_url):
        self.url = postgres_url
