"""A view's table, described without SQL: columns of neutral types, a primary key, indexes.

Every table also holds two system columns the engine fills for each row: ``aggregate_id`` (the
aggregate the row was last written from) and ``aggregate_version`` (that aggregate's version then).
Identifiers are checked here once, so every name that reaches SQL is a plain lowercase word and no
value ever does (values are always parameters).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, get_args

from foldline.errors import AggregateDefinitionError

ColumnType = Literal["text", "integer", "numeric", "date", "timestamp", "boolean"]
Source = Literal["snapshots", "events"]
COLUMN_TYPES: tuple[str, ...] = get_args(ColumnType)
SOURCES: tuple[str, ...] = get_args(Source)

AGGREGATE_ID = "aggregate_id"
AGGREGATE_VERSION = "aggregate_version"
SYSTEM_COLUMNS = (AGGREGATE_ID, AGGREGATE_VERSION)
MAX_REVISION = 1_000_000

#: View names read like aggregate names; '-' becomes '_' in table names, so the mapping is one to one.
VIEW_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
COLUMN_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


def check_view_name(view: str) -> str:
    if not isinstance(view, str) or not VIEW_NAME.match(view):
        raise AggregateDefinitionError(
            f"view name {view!r} must be 1-40 lowercase letters, digits and dashes, starting with a letter"
        )
    return view


def check_revision(revision: object) -> int:
    if isinstance(revision, bool) or not isinstance(revision, int) or not 1 <= revision <= MAX_REVISION:
        raise AggregateDefinitionError(f"revision must be an integer from 1 to {MAX_REVISION}, got {revision!r}")
    return revision


def table_name(view: str, revision: int) -> str:
    """``invoice-list`` revision 2 lives in table ``invoice_list__r2``."""
    return f"{check_view_name(view).replace('-', '_')}__r{check_revision(revision)}"


@dataclass(frozen=True)
class Column:
    """One column: ``type`` is text, integer, numeric (Decimal), date, timestamp or boolean."""

    name: str
    type: ColumnType
    nullable: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not COLUMN_NAME.match(self.name):
            raise AggregateDefinitionError(
                f"column name {self.name!r} must be lowercase letters, digits and '_', starting with a letter"
            )
        if self.type not in COLUMN_TYPES:
            raise AggregateDefinitionError(
                f"column {self.name!r} has type {self.type!r}; use one of {', '.join(COLUMN_TYPES)}"
            )


_SYSTEM = (Column(AGGREGATE_ID, "text", nullable=False), Column(AGGREGATE_VERSION, "integer", nullable=False))


def check_value(column: Column, value: Any) -> Any:
    """The value if it fits the column's type (ints are accepted for numeric), else raise ValueError."""
    if value is None:
        if not column.nullable:
            raise ValueError(f"column {column.name!r} must not be null")
        return None
    kind = column.type
    ok = (
        (kind == "text" and isinstance(value, str))
        or (kind == "integer" and isinstance(value, int) and not isinstance(value, bool))
        or (kind == "numeric" and isinstance(value, (Decimal, int)) and not isinstance(value, bool))
        or (kind == "date" and isinstance(value, date) and not isinstance(value, datetime))
        or (kind == "timestamp" and isinstance(value, datetime))
        or (kind == "boolean" and isinstance(value, bool))
    )
    if not ok:
        raise ValueError(f"column {column.name!r} is {kind}, got {type(value).__name__} {value!r}")
    if kind == "numeric":
        if isinstance(value, int):
            return Decimal(value)
        if not value.is_finite():
            raise ValueError(f"column {column.name!r} needs a finite number, got {value}")
    if kind == "integer" and not -(2**63) <= value < 2**63:
        raise ValueError(f"column {column.name!r} holds 64-bit integers, got {value}")
    return value


@dataclass(frozen=True)
class TableDef:
    """A compiled, checked view revision: what the targets create and read."""

    view: str
    revision: int
    aggregate: str
    source: Source
    topic: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def build(
        cls,
        *,
        view: str,
        revision: int,
        aggregate: str,
        source: str,
        topic: str,
        columns: tuple[Column, ...],
        key: tuple[str, ...],
        indexes: tuple[tuple[str, ...], ...] = (),
    ) -> TableDef:
        check_view_name(view)
        check_revision(revision)
        if source not in SOURCES:
            raise AggregateDefinitionError(f"source must be 'snapshots' or 'events', got {source!r}")
        if not columns or not all(isinstance(c, Column) for c in columns):
            raise AggregateDefinitionError(f"view {view!r} must declare its columns as a tuple of Column")
        names = [c.name for c in columns]
        for name in names:
            if name in SYSTEM_COLUMNS:
                raise AggregateDefinitionError(f"{name!r} is a system column every view has; do not declare it")
            if names.count(name) > 1:
                raise AggregateDefinitionError(f"view {view!r} declares column {name!r} twice")
        all_columns = (*columns, *_SYSTEM)
        known = {c.name: c for c in all_columns}
        if not key or len(set(key)) != len(key):
            raise AggregateDefinitionError(f"view {view!r} needs a primary key of distinct columns")
        for name in key:
            if name not in known or name in SYSTEM_COLUMNS:
                raise AggregateDefinitionError(f"primary key column {name!r} is not a declared column of {view!r}")
        # Key columns are never null, whatever was declared.
        all_columns = tuple(Column(c.name, c.type, False) if c.name in key else c for c in all_columns)
        for index in indexes:
            if not index or any(name not in known for name in index):
                raise AggregateDefinitionError(f"index {index!r} of {view!r} names unknown columns")
        checked: Source = "snapshots" if source == "snapshots" else "events"  # checked against SOURCES above
        return cls(view, revision, aggregate, checked, topic, all_columns, tuple(key), tuple(tuple(i) for i in indexes))

    @property
    def table(self) -> str:
        return table_name(self.view, self.revision)

    @property
    def versions_table(self) -> str:
        """Per aggregate: the version this revision has reached, and the projection's memo."""
        return self.table + "__agg"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column_map(self) -> dict[str, Column]:
        return {c.name: c for c in self.columns}

    def definition(self) -> str:
        """The JSON the catalog keeps, from which a reader rebuilds this definition."""
        return json.dumps(
            {
                "aggregate": self.aggregate,
                "source": self.source,
                "topic": self.topic,
                "columns": [[c.name, c.type, c.nullable] for c in self.columns if c.name not in SYSTEM_COLUMNS],
                "key": list(self.key),
                "indexes": [list(i) for i in self.indexes],
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_definition(cls, view: str, revision: int, text: str) -> TableDef:
        data: Mapping[str, Any] = json.loads(text)
        columns = tuple(Column(str(n), t, bool(nullable)) for n, t, nullable in data["columns"])
        return cls.build(
            view=view,
            revision=revision,
            aggregate=str(data["aggregate"]),
            source=str(data["source"]),
            topic=str(data["topic"]),
            columns=columns,
            key=tuple(data["key"]),
            indexes=tuple(tuple(i) for i in data.get("indexes", ())),
        )
