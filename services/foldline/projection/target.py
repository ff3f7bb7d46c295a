"""The reader's interface to projections, and ``open_target(url)`` for both databases.

The gateway reads views only through ``ProjectionTarget``: rows of the active revision as JSON-ready
dicts (Decimal -> str, date -> ISO string), the version a view reached per aggregate (for
read-after-write), and the column names. Unknown views and columns raise foldline errors
(``UnknownViewError``, ``UnknownColumnError``), never a driver's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from foldline.errors import ConfigurationError
from foldline.projection.base import SqlStore
from foldline.projection.sql import redact

SQLITE_PREFIX = "sqlite:///"


@runtime_checkable
class ProjectionTarget(Protocol):
    def read_rows(
        self, view: str, *, filters: Mapping[str, str], limit: int = 100, offset: int = 0, order_by: str | None = None
    ) -> list[dict[str, Any]]:
        """Rows of the view's active revision; ``order_by`` is a column, ``-column`` for descending."""
        ...

    def aggregate_version(self, view: str, aggregate_id: str) -> int | None:
        """The version the view has reached for that aggregate (active revision); None if unseen."""
        ...

    def columns(self, view: str) -> list[str]: ...

    def close(self) -> None: ...


def open_store(url: str, *, pool_size: int = 4, connect_timeout: float = 30.0) -> SqlStore:
    """The projection database at ``url``: ``sqlite:///relative.db``, ``sqlite:////abs.db`` or
    ``postgresql://user@host:port/db[?schema=name]``."""
    if url.startswith(SQLITE_PREFIX):
        from foldline.projection.sqlite import SqliteStore

        path = url[len(SQLITE_PREFIX) :].split("?", 1)[0]
        if not path or path == ":memory:":
            raise ConfigurationError("a SQLite projection database needs a file path: sqlite:///path/to/views.db")
        return SqliteStore(path)
    if url.startswith(("postgresql://", "postgres://")):
        from foldline.projection.postgres import PostgresStore

        return PostgresStore(url, pool_size=pool_size, connect_timeout=connect_timeout)
    raise ConfigurationError(
        f"unsupported projection database URL {redact(url)!r}: use sqlite:///path.db or postgresql://..."
    )


def open_target(url: str) -> ProjectionTarget:
    """A reader of the projection database at ``url`` (see ``open_store`` for the URL forms)."""
    return open_store(url)


class ProjectionViews:
    """The projections' side of the gateway's views (``foldline.gateway.views.ViewCatalog``)."""

    def view_of(self, projection: str) -> tuple[str, str]:
        from foldline.projection.api import load_projection

        spec = load_projection(projection)
        return spec.view, spec.aggregate

    def journal_of(self, aggregate: str) -> str:
        from foldline.projection.journal import journal_view

        return journal_view(aggregate)

    def open(self, database_url: str) -> ProjectionTarget:
        return open_target(database_url)
