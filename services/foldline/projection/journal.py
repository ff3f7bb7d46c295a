"""The event journal: a built-in projection that keeps every event of an aggregate in the database.

One row per event, keyed by aggregate id and version, written exactly once like every view (positions
and per-aggregate versions in the same transaction). A row holds the event as it was written — type,
schema version, raw payload — so a reader folds history with the aggregate's *current* upcasters and
``evolve``, never with whatever the code was when the journal was filled. The gateway serves history and
state-at-version from it (``/aggregates/{agg}/{id}/events``, ``.../state``), never by scanning Kafka.

    foldline projector --journal foldline.examples.invoices:Invoices [--database URL]
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from foldline.aggregate import Aggregate, load_object
from foldline.errors import AggregateDefinitionError
from foldline.projection.api import Event, Projection, ProjectionSpec, RowChange, Upsert
from foldline.projection.schema import VIEW_NAME, Column

SUFFIX = "-journal"


def journal_view(aggregate_name: str) -> str:
    """The journal's view name of an aggregate: ``invoices`` -> ``invoices-journal``."""
    view = aggregate_name + SUFFIX
    if not VIEW_NAME.match(view):
        raise AggregateDefinitionError(
            f"the event journal of {aggregate_name!r} would be named {view!r}, longer than a view name may be "
            "(40 characters); use a shorter aggregate name"
        )
    return view


class EventJournal(Projection):
    """Every event of one aggregate type; ``journal_projection`` makes one per aggregate class."""

    source = "events"
    revision = 1
    columns: ClassVar[tuple[Column, ...]] = (
        Column("id", "text"),
        Column("version", "integer"),
        Column("type", "text", nullable=False),
        Column("schema_version", "integer", nullable=False),
        Column("payload", "text", nullable=False),  # JSON, as written (before any upcaster)
        Column("recorded_at", "text", nullable=False),
        Column("command_id", "text", nullable=False),
    )
    key = ("id", "version")
    # Events are kept as written: one of a type this code does not know (or cannot upcast) is still a row
    # of the timeline, never a gap; reading the history says it cannot be folded.
    decode_events = False

    def project(self, record: Event) -> list[RowChange]:
        return [
            Upsert(
                {
                    "id": record.aggregate_id,
                    "version": record.version,
                    "type": storable(record.type),
                    "schema_version": record.schema_version,
                    "payload": payload_text(record.payload),
                    "recorded_at": storable(record.recorded_at),
                    "command_id": storable(record.command_id),
                }
            )
        ]


def storable(text: str) -> str:
    """Text every database keeps: a NUL (PostgreSQL refuses it) and a lone surrogate (no encoding has
    it) are written as escapes, so an odd event is a row with a visible oddity, not a skipped record."""
    if "\x00" in text:
        text = text.replace("\x00", "\\u0000")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return text


def payload_text(payload: object) -> str:
    """The payload as JSON text; non-ASCII stays readable unless a lone surrogate needs JSON's escapes."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return text


def journal_projection(aggregate: type[Aggregate[Any]] | str, *, aggregate_name: str | None = None) -> ProjectionSpec:
    """The journal projection of an aggregate class (or its import path), compiled for the engine."""
    cls = load_object(aggregate) if isinstance(aggregate, str) else aggregate
    if not isinstance(cls, type):
        cls = type(cls)
    if not issubclass(cls, Aggregate):
        raise AggregateDefinitionError(f"{aggregate} is not a foldline Aggregate class")
    name = aggregate_name or cls.name
    journal = type(f"EventJournal_{cls.__name__}", (EventJournal,), {"aggregate": cls, "name": journal_view(name)})
    return ProjectionSpec(journal(aggregate_name=name))
