"""Errors of the read path, placed in foldline's hierarchy (see ``foldline.errors``).

A reader (the gateway) maps ``UnknownViewError`` to 404 and ``InvalidQueryError`` to 400; both are
``CommandError``s because the request can never succeed as sent. ``RevisionRetiredError`` tells a
projector that a newer revision took over its view: it stops instead of writing to a dropped table.
"""

from __future__ import annotations

from foldline.errors import CommandError, PermanentError, ValidationError


class UnknownViewError(CommandError):
    """No active revision of that view exists in the projection database."""

    code = "unknown_view"


class InvalidQueryError(ValidationError):
    """A filter, ordering or page that the view cannot answer (unknown column, bad value, bad limit)."""

    code = "invalid_query"


class UnknownColumnError(InvalidQueryError):
    """The query names a column the view does not have."""

    code = "unknown_column"


class RevisionRetiredError(PermanentError):
    """This revision of the view was replaced by a newer one (or is older than the active one)."""


class ProjectionStoreError(PermanentError):
    """The projection database refused a statement for a reason retrying will not fix."""


class MissingTableError(ProjectionStoreError):
    """A table the statement names does not exist (no catalog yet, or a revision just dropped)."""
