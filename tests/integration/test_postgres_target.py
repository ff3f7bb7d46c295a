"""PostgreSQL specifics of the projection target: URLs, schemas, an unreachable server."""

from __future__ import annotations

import socket
import time

import pytest

from foldline.errors import ConfigurationError, StoreUnavailableError
from foldline.projection import Column, TableDef, open_store
from foldline.projection.postgres import split_url
from foldline.projection.sql import redact

pytestmark = pytest.mark.postgres


def test_schema_parameter_is_foldlines_own():
    assert split_url("postgres://u:pw@h:5/db?schema=views&sslmode=disable") == (
        "postgresql://u:pw@h:5/db?sslmode=disable",
        "views",
    )
    assert split_url("postgresql://h/db") == ("postgresql://h/db", None)
    for bad in ("Views", "pg_catalog", "a;drop", "x-y"):
        with pytest.raises(ConfigurationError):
            split_url(f"postgresql://h/db?schema={bad}")


def test_passwords_never_reach_messages():
    assert redact("postgresql://user:secret@db:5432/x") == "postgresql://user:***@db:5432/x"
    assert redact("sqlite:///views.db") == "sqlite:///views.db"


def test_schemas_keep_views_apart(postgres_url, postgres_dsn):
    table = TableDef.build(
        view="same-name",
        revision=1,
        aggregate="a",
        source="snapshots",
        topic="a.snapshots",
        columns=(Column("id", "text"),),
        key=("id",),
    )
    first, other = open_store(postgres_url), open_store(postgres_url.replace("?schema=", "?schema=x"))
    try:
        first.register(table)
        assert first.columns("same-name") == ["id", "aggregate_id", "aggregate_version"]
        assert other.views() == []
    finally:
        with other.session(write=True) as s:
            s.execute(f"DROP SCHEMA {other.schema} CASCADE")  # type: ignore[attr-defined]
        first.close()
        other.close()


def test_an_unreachable_server_is_a_retryable_error():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="cannot connect"):
        open_store(f"postgresql://foldline@127.0.0.1:{port}/foldline", connect_timeout=2)
    assert time.monotonic() - started < 15
