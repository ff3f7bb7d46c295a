"""The projection API: a read model declared as a table and a pure ``project(record) -> [RowChange]``.

A team writes one ``Projection`` subclass per view::

    class InvoiceList(Projection):
        name = "invoice-list"            # the view
        aggregate = Invoices             # the aggregate class; its name picks the topics
        source = "snapshots"             # or "events"
        revision = 1                     # change it to rebuild the view into a new table
        columns = (Column("id", "text"), Column("total", "numeric"), ...)
        key = ("id",)

        def project(self, record: Snapshot) -> list[RowChange]:
            return [Upsert({"id": record.aggregate_id, "total": record.state.total, ...})]

Snapshot-sourced projections receive the decoded state of one aggregate and return the complete set of
rows that aggregate has in the view now: rows it no longer returns are deleted (so a removed line item
disappears, and returning nothing removes the aggregate from the view). Event-sourced projections
receive each decoded event once, in order per aggregate, and may use ``Increment`` for counters and
``Remember`` to keep a small per-aggregate memo (say, the customer an invoice belongs to).

The engine writes ``aggregate_id`` and ``aggregate_version`` into every row itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar

from foldline.aggregate import Aggregate, AggregateSpec, load_object
from foldline.errors import AggregateDefinitionError
from foldline.projection.schema import (
    SYSTEM_COLUMNS,
    Column,
    Source,
    TableDef,
    check_revision,
    check_value,
    check_view_name,
)
from foldline.topics import TopicNames

# Values of exactly these types need no further check (bool is not an integer, datetime not a date;
# a Decimal must still be finite). Anything else goes through ``check_value``, which accepts or explains.
_EXACT: dict[str, frozenset[type]] = {
    "text": frozenset({str}),
    "integer": frozenset(),
    "numeric": frozenset({Decimal}),
    "date": frozenset({date}),
    "timestamp": frozenset({datetime}),
    "boolean": frozenset({bool}),
}


# -- what project() receives -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Snapshot:
    """The latest state of one aggregate, decoded with the aggregate's own types."""

    aggregate_id: str
    version: int
    state: Any
    updated_at: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    """One decoded event; ``memo`` is what this projection last ``Remember``-ed for the aggregate."""

    aggregate_id: str
    version: int
    type: str
    event: Any
    recorded_at: str = ""
    memo: Mapping[str, Any] = field(default_factory=dict)
    #: The record as written, before upcasting: what the event journal keeps.
    schema_version: int = 1
    payload: Mapping[str, Any] = field(default_factory=dict)
    command_id: str = ""


Record = Snapshot | Event


# -- what project() returns ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Upsert:
    """Insert or replace one row; ``values`` holds every key column (missing other columns become null).

    Applied only if the row is new, or was written by another aggregate, or by this aggregate at a
    version not above the incoming one: a replayed record never moves a row back.
    """

    values: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete the row with this key (unless this aggregate already wrote it at a newer version)."""

    key: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Increment:
    """Add to integer or numeric columns of one row (created from zero if missing), and set others.

    Not idempotent by itself: the engine applies every event exactly once (positions committed with the
    rows, and a per-aggregate version that skips events already applied).
    """

    key: Mapping[str, Any]
    add: Mapping[str, Any]
    set: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Remember:
    """Replace the projection's memo for this aggregate (JSON-ready values); passed back in ``Event.memo``."""

    memo: Mapping[str, Any]


RowChange = Upsert | Delete | Increment | Remember


class Projection:
    """Base class of a view definition. Subclasses set the class variables and ``project``."""

    name: ClassVar[str]
    aggregate: ClassVar[type[Aggregate[Any]]]
    source: ClassVar[Source] = "snapshots"
    revision: ClassVar[int] = 1
    columns: ClassVar[tuple[Column, ...]]
    key: ClassVar[tuple[str, ...]]
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = ()
    #: False: an events projection that works on the record as written (``Event.payload``), so an event
    #: this code cannot decode (an unknown type, a missing upcaster) still reaches it; ``Event.event``
    #: is then None. The event journal is one.
    decode_events: ClassVar[bool] = True

    def __init__(
        self, *, aggregate_name: str | None = None, view_name: str | None = None, revision: int | None = None
    ) -> None:
        """Overrides for deployments (and tests) that run the same code under other names."""
        cls = type(self)
        for attr in ("name", "aggregate", "columns", "key"):
            if not hasattr(cls, attr):
                raise AggregateDefinitionError(f"{cls.__qualname__} must set the class variable {attr!r}")
        self.view_name = check_view_name(view_name or cls.name)
        self.aggregate_name = aggregate_name or cls.aggregate.name
        self.view_revision = check_revision(cls.revision if revision is None else revision)

    def project(self, record: Any) -> Sequence[RowChange]:
        raise NotImplementedError


class ProjectionSpec:
    """A projection checked once and compiled for the engine: its table, topic and aggregate codecs."""

    def __init__(self, projection: Projection) -> None:
        cls = type(projection)
        if not (isinstance(cls.aggregate, type) and issubclass(cls.aggregate, Aggregate)):
            raise AggregateDefinitionError(f"{cls.__qualname__}.aggregate must be an Aggregate class")
        self.projection = projection
        self.aggregate_spec = AggregateSpec(cls.aggregate())
        self.topics = TopicNames(projection.aggregate_name)
        self.source: Source = cls.source
        self.topic = self.topics.snapshots if cls.source == "snapshots" else self.topics.events
        self.table = TableDef.build(
            view=projection.view_name,
            revision=projection.view_revision,
            aggregate=projection.aggregate_name,
            source=cls.source,
            topic=self.topic,
            columns=tuple(cls.columns),
            key=tuple(cls.key),
            indexes=tuple(cls.indexes),
        )
        self._columns = self.table.column_map()
        self._writable = frozenset(c.name for c in self.table.columns if c.name not in SYSTEM_COLUMNS)
        self._fast = [(c.name, _EXACT[c.type], c) for c in self.table.columns if c.name not in SYSTEM_COLUMNS]

    @property
    def view(self) -> str:
        return self.table.view

    @property
    def revision(self) -> int:
        return self.table.revision

    @property
    def aggregate(self) -> str:
        return self.table.aggregate

    def check(self, change: Any) -> RowChange:
        """A change whose columns and values fit the table; ValueError (naming the fault) otherwise."""
        cols = self._columns
        if isinstance(change, Upsert):
            values = change.values
            if not self._writable.issuperset(values):
                self._known(values)
            for name, exact, column in self._fast:  # the common case costs one type lookup per value
                value = values.get(name)
                if value is None:
                    if not column.nullable:
                        raise ValueError(
                            f"Upsert needs the key column {name!r}"
                            if name in self.table.key
                            else f"column {name!r} must not be null"
                        )
                elif type(value) not in exact or (type(value) is Decimal and not value.is_finite()):
                    check_value(column, value)
            return change
        if isinstance(change, Delete):
            self._key(change.key)
            return change
        if isinstance(change, Increment):
            self._key(change.key)
            self._known(change.add)
            self._known(change.set)
            for name, value in change.add.items():
                if cols[name].type not in ("integer", "numeric") or name in self.table.key:
                    raise ValueError(f"Increment can only add to integer or numeric non-key columns, not {name!r}")
                if value is None:
                    raise ValueError(f"Increment of {name!r} needs a number")
                check_value(cols[name], value)
            for name, value in change.set.items():
                if name in change.add or name in self.table.key:
                    raise ValueError(f"Increment sets {name!r}, which is a key column or also added to")
                check_value(cols[name], value)
            return change
        if isinstance(change, Remember):
            if not isinstance(change.memo, Mapping):
                raise ValueError("Remember needs a mapping of JSON-ready values")
            return change
        raise ValueError(f"project() returned {type(change).__name__}, not Upsert, Delete, Increment or Remember")

    def _known(self, values: Mapping[str, Any]) -> None:
        for name in values:
            if name not in self._columns or name in ("aggregate_id", "aggregate_version"):
                raise ValueError(f"{self.view} has no column {name!r} that a projection may write")

    def _key(self, key: Mapping[str, Any]) -> None:
        if set(key) != set(self.table.key):
            raise ValueError(f"a key of {self.view} has exactly the columns {', '.join(self.table.key)}")
        for name, value in key.items():
            if value is None:
                raise ValueError(f"key column {name!r} must not be null")
            check_value(self._columns[name], value)


def load_projection(path: str, *, aggregate_name: str | None = None, view_name: str | None = None) -> ProjectionSpec:
    """Import a projection class (or instance) by ``package.module:Name`` and compile it."""
    obj = load_object(path)
    if isinstance(obj, type) and issubclass(obj, Projection):
        instance = obj(aggregate_name=aggregate_name, view_name=view_name)
    elif isinstance(obj, Projection):
        instance = obj
        if aggregate_name or view_name:
            instance = type(obj)(
                aggregate_name=aggregate_name or obj.aggregate_name,
                view_name=view_name or obj.view_name,
                revision=obj.view_revision,
            )
    else:
        raise AggregateDefinitionError(f"{path} is not a foldline Projection")
    return ProjectionSpec(instance)
