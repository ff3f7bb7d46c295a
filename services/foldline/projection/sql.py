"""The SQL both targets speak: DDL, the version-guarded upsert, and value conversion per dialect.

SQLite and PostgreSQL share the statements (``INSERT ... ON CONFLICT ... DO UPDATE ... WHERE``,
``"quoted"`` identifiers); a ``Dialect`` supplies the placeholders, the column types and the
conversions. Identifiers come only from ``schema`` (checked there); values are always parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from foldline.projection.errors import InvalidQueryError
from foldline.projection.schema import AGGREGATE_ID, AGGREGATE_VERSION, SYSTEM_COLUMNS, Column, TableDef

CATALOG = (
    """CREATE TABLE IF NOT EXISTS foldline_views (
        view TEXT PRIMARY KEY,
        active_revision INTEGER,
        updated_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS foldline_revisions (
        view TEXT NOT NULL,
        revision INTEGER NOT NULL,
        state TEXT NOT NULL,
        definition TEXT NOT NULL,
        created_at TEXT NOT NULL,
        switched_at TEXT,
        switch_positions TEXT,
        PRIMARY KEY (view, revision))""",
    """CREATE TABLE IF NOT EXISTS foldline_positions (
        view TEXT NOT NULL,
        revision INTEGER NOT NULL,
        topic TEXT NOT NULL,
        "partition" INTEGER NOT NULL,
        next_offset BIGINT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (view, revision, topic, "partition"))""",
    # Records a revision passed over, with the cause: undecodable, project_failed, refused_by_database.
    """CREATE TABLE IF NOT EXISTS foldline_skipped (
        view TEXT NOT NULL,
        revision INTEGER NOT NULL,
        topic TEXT NOT NULL,
        "partition" INTEGER NOT NULL,
        "offset" BIGINT NOT NULL,
        aggregate_id TEXT,
        version BIGINT,
        reason TEXT NOT NULL,
        error TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        PRIMARY KEY (view, revision, topic, "partition", "offset"))""",
)


def q(name: str) -> str:
    """Quote an identifier that ``schema`` already checked (lowercase letters, digits, '_')."""
    return f'"{name}"'


def utc(value: datetime) -> datetime:
    """Naive timestamps are taken as UTC; every stored timestamp is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: The range of an integer column (BIGINT), and the largest exponent a numeric filter may have: values
#: past them can match no row, and PostgreSQL would refuse them rather than answer "none".
INT64 = (-(1 << 63), (1 << 63) - 1)
MAX_NUMERIC_EXPONENT = 10_000
_HINTS = {
    "text": " (no NUL characters)",
    "integer": " (a whole number within 64 bits)",
    "numeric": f" (a finite decimal within {MAX_NUMERIC_EXPONENT} places of the point)",
    "date": " (YYYY-MM-DD)",
    "timestamp": " (ISO 8601)",
    "boolean": " (true or false)",
}


def parse_filter(column: Column, raw: Any) -> Any:
    """A query value (a string from a URL) as the column's Python type, or InvalidQueryError."""
    text = str(raw).strip() if not isinstance(raw, str) else raw
    try:
        if "\x00" in text:
            raise ValueError("NUL")
        kind = column.type
        if kind == "text":
            return text
        if kind == "integer":
            if isinstance(raw, bool) or not text.lstrip("-").isdigit() or len(text) > 20:
                raise ValueError(text)
            value = int(text)
            if not INT64[0] <= value <= INT64[1]:
                raise ValueError(text)
            return value
        if kind == "numeric":
            number = Decimal(text)
            if (
                not number.is_finite()
                or max(abs(number.adjusted()), -int(number.as_tuple().exponent)) > MAX_NUMERIC_EXPONENT
            ):
                raise ValueError(text)
            return number
        if kind == "date":
            return date.fromisoformat(text)
        if kind == "timestamp":
            return utc(datetime.fromisoformat(text))
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(text)
    except (ValueError, InvalidOperation):
        raise InvalidQueryError(
            f"filter {column.name}={str(raw)[:80]!r} is not a valid {column.type}{_HINTS.get(column.type, '')}",
            details={"field": column.name},
        ) from None


class Dialect:
    """How one database spells types and values; subclasses override what differs."""

    name = "sql"
    param = "?"
    types: dict[str, str] = {}

    def to_db(self, kind: str, value: Any) -> Any:
        return value

    def binds_as_is(self, kind: str) -> bool:
        """True if ``to_db`` never changes values of this kind."""
        return kind in ("text", "integer", "numeric", "date", "boolean")

    def from_db(self, kind: str, value: Any) -> Any:
        return value

    def add_expr(self, table: str, column: Column) -> str:
        col = q(column.name)
        return f"COALESCE({q(table)}.{col}, 0) + excluded.{col}"

    def order_expr(self, column: Column) -> str:
        return q(column.name)

    def filter_expr(self, column: Column) -> str:
        return f"{q(column.name)} = {self.param}"

    def filter_param(self, column: Column, value: Any) -> Any:
        return self.to_db(column.type, value)

    def in_list(self, column: str, count: int) -> str:
        return f"{q(column)} IN ({', '.join([self.param] * count)})"

    def in_params(self, values: Sequence[Any]) -> list[Any]:
        return list(values)

    # -- statements -----------------------------------------------------------------------------------
    def create_table(self, t: TableDef) -> list[str]:
        cols = ", ".join(f"{q(c.name)} {self.types[c.type]}{'' if c.nullable else ' NOT NULL'}" for c in t.columns)
        key = ", ".join(q(k) for k in t.key)
        out = [
            f"CREATE TABLE IF NOT EXISTS {q(t.table)} ({cols}, PRIMARY KEY ({key}))",
            f"CREATE TABLE IF NOT EXISTS {q(t.versions_table)} ({q(AGGREGATE_ID)} TEXT PRIMARY KEY, "
            f"version BIGINT NOT NULL, memo TEXT)",
        ]
        if t.key[0] != AGGREGATE_ID:  # the stale-row delete looks rows up by aggregate
            out.append(f"CREATE INDEX IF NOT EXISTS {q(t.table + '__aid')} ON {q(t.table)} ({q(AGGREGATE_ID)})")
        for n, index in enumerate(t.indexes, 1):
            cols = ", ".join(q(c) for c in index)
            out.append(f"CREATE INDEX IF NOT EXISTS {q(f'{t.table}__i{n}')} ON {q(t.table)} ({cols})")
        return out

    def drop_table(self, table: str) -> list[str]:
        return [f"DROP TABLE IF EXISTS {q(table)}", f"DROP TABLE IF EXISTS {q(table + '__agg')}"]

    def upsert(self, t: TableDef) -> str:
        names = [c.name for c in t.columns]
        values = ", ".join([self.param] * len(names))
        sets = ", ".join(f"{q(n)} = excluded.{q(n)}" for n in names if n not in t.key)
        tbl = q(t.table)
        return (
            f"INSERT INTO {tbl} ({', '.join(q(n) for n in names)}) VALUES ({values}) "
            f"ON CONFLICT ({', '.join(q(k) for k in t.key)}) DO UPDATE SET {sets} "
            f"WHERE excluded.{q(AGGREGATE_ID)} <> {tbl}.{q(AGGREGATE_ID)} "
            f"OR excluded.{q(AGGREGATE_VERSION)} >= {tbl}.{q(AGGREGATE_VERSION)}"
        )

    def delete(self, t: TableDef) -> str:
        where = " AND ".join(f"{q(k)} = {self.param}" for k in t.key)
        return (
            f"DELETE FROM {q(t.table)} WHERE {where} AND NOT "
            f"({q(AGGREGATE_ID)} = {self.param} AND {q(AGGREGATE_VERSION)} > {self.param})"
        )

    def increment(self, t: TableDef, add: Sequence[str], set_: Sequence[str]) -> str:
        cols = t.column_map()
        names = [*t.key, *add, *set_, *(n for n in SYSTEM_COLUMNS if n not in t.key)]
        values = ", ".join([self.param] * len(names))
        updates = [f"{q(n)} = {self.add_expr(t.table, cols[n])}" for n in add]
        updates += [f"{q(n)} = excluded.{q(n)}" for n in names if n not in t.key and n not in add]
        return (
            f"INSERT INTO {q(t.table)} ({', '.join(q(n) for n in names)}) VALUES ({values}) "
            f"ON CONFLICT ({', '.join(q(k) for k in t.key)}) DO UPDATE SET {', '.join(updates)}"
        )

    def delete_stale(self, t: TableDef) -> str:
        return (
            f"DELETE FROM {q(t.table)} WHERE {q(AGGREGATE_ID)} = {self.param} AND {q(AGGREGATE_VERSION)} < {self.param}"
        )

    def save_version(self, t: TableDef) -> str:
        p, tbl = self.param, q(t.versions_table)
        return (
            f"INSERT INTO {tbl} ({q(AGGREGATE_ID)}, version, memo) VALUES ({p}, {p}, {p}) "
            f"ON CONFLICT ({q(AGGREGATE_ID)}) DO UPDATE SET version = excluded.version, memo = excluded.memo "
            f"WHERE excluded.version > {tbl}.version"
        )

    def save_position(self) -> str:
        p = self.param
        return (
            'INSERT INTO foldline_positions (view, revision, topic, "partition", next_offset, updated_at) '
            f'VALUES ({p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (view, revision, topic, "partition") '
            "DO UPDATE SET next_offset = excluded.next_offset, updated_at = excluded.updated_at "
            "WHERE excluded.next_offset > foldline_positions.next_offset"
        )

    def save_skipped(self) -> str:
        p = self.param
        return (
            'INSERT INTO foldline_skipped (view, revision, topic, "partition", "offset", aggregate_id, version, '
            f"reason, error, recorded_at) VALUES ({', '.join([p] * 10)}) "
            'ON CONFLICT (view, revision, topic, "partition", "offset") DO NOTHING'
        )

    def converters(self, t: TableDef) -> list[Callable[[Any], Any]]:
        """Per column of ``t`` (in order): Python value -> the value to bind (None stays None)."""
        return [self.binder(c.type) for c in t.columns]

    def binder(self, kind: str) -> Callable[[Any], Any]:
        to_db = self.to_db

        def convert(value: Any) -> Any:
            return None if value is None else to_db(kind, value)

        return convert


class SqliteDialect(Dialect):
    """Exact values stay exact: numeric, date and timestamp are stored as canonical text."""

    name = "sqlite"
    param = "?"
    types = {
        "text": "TEXT",
        "integer": "INTEGER",
        "numeric": "TEXT",
        "date": "TEXT",
        "timestamp": "TEXT",
        "boolean": "INTEGER",
    }

    def binds_as_is(self, kind: str) -> bool:
        return kind in ("text", "integer")

    def binder(self, kind: str) -> Callable[[Any], Any]:
        if kind == "numeric":  # the hot ones, without the dispatch of to_db
            return lambda value: None if value is None else str(value)
        if kind == "date":
            return lambda value: None if value is None else value.isoformat()
        return super().binder(kind)

    def to_db(self, kind: str, value: Any) -> Any:
        if kind == "numeric":
            return str(value)
        if kind == "date":
            return value.isoformat()
        if kind == "timestamp":
            return utc(value).isoformat(timespec="microseconds")
        if kind == "boolean":
            return 1 if value else 0
        return value

    def from_db(self, kind: str, value: Any) -> Any:
        if value is None:
            return None
        if kind == "numeric":
            return str(value)
        if kind == "timestamp":
            return datetime.fromisoformat(value).isoformat()
        if kind == "boolean":
            return bool(value)
        return value

    def add_expr(self, table: str, column: Column) -> str:
        if column.type == "numeric":  # decimal arithmetic in Python: a REAL would lose cents
            return f"foldline_decimal_add({q(table)}.{q(column.name)}, excluded.{q(column.name)})"
        return super().add_expr(table, column)

    def order_expr(self, column: Column) -> str:
        return f"CAST({q(column.name)} AS REAL)" if column.type == "numeric" else q(column.name)

    def filter_expr(self, column: Column) -> str:
        if column.type == "numeric":
            return f"CAST({q(column.name)} AS REAL) = CAST({self.param} AS REAL)"
        return super().filter_expr(column)


def decimal_add(a: str | None, b: str | None) -> str | None:
    """``foldline_decimal_add`` for SQLite: exact addition of numeric text."""
    if a is None or b is None:
        return b if a is None else a
    return str(Decimal(a) + Decimal(b))


class PostgresDialect(Dialect):
    name = "postgresql"
    param = "%s"
    types = {
        "text": "TEXT",
        "integer": "BIGINT",
        "numeric": "NUMERIC",
        "date": "DATE",
        "timestamp": "TIMESTAMPTZ",
        "boolean": "BOOLEAN",
    }

    def to_db(self, kind: str, value: Any) -> Any:
        return utc(value) if kind == "timestamp" else value

    def from_db(self, kind: str, value: Any) -> Any:
        if value is None:
            return None
        if kind == "numeric":
            return str(value)
        if kind == "date":
            return value.isoformat()
        if kind == "timestamp":
            return utc(value).isoformat()
        return value

    def in_list(self, column: str, count: int) -> str:
        return f"{q(column)} = ANY({self.param})"

    def in_params(self, values: Sequence[Any]) -> list[Any]:
        return [list(values)]


def redact(url: str) -> str:
    """The URL without a password, for logs and errors."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in userinfo else url
