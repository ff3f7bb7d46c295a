"""Projections: read models fed from an aggregate's snapshots or events, exactly once into a database.

from foldline.projection import Projection, Column, Upsert, open_target
"""

from foldline.projection.api import (
    Delete,
    Event,
    Increment,
    Projection,
    ProjectionSpec,
    Remember,
    RowChange,
    Snapshot,
    Upsert,
    load_projection,
)
from foldline.projection.errors import (
    InvalidQueryError,
    MissingTableError,
    ProjectionStoreError,
    RevisionRetiredError,
    UnknownColumnError,
    UnknownViewError,
)
from foldline.projection.schema import Column, ColumnType, Source, TableDef
from foldline.projection.target import ProjectionTarget, ProjectionViews, open_store, open_target

__all__ = [
    "Column",
    "ColumnType",
    "Delete",
    "Event",
    "Increment",
    "InvalidQueryError",
    "MissingTableError",
    "Projection",
    "ProjectionSpec",
    "ProjectionStoreError",
    "ProjectionTarget",
    "ProjectionViews",
    "Remember",
    "RevisionRetiredError",
    "RowChange",
    "Snapshot",
    "Source",
    "TableDef",
    "UnknownColumnError",
    "UnknownViewError",
    "Upsert",
    "load_projection",
    "open_store",
    "open_target",
]
