"""Statements on the catalog tables that both the store and a batch run: one spelling of each.

``check_revision`` answers whether a revision may still write (the batch, the switch and a status read
all ask); ``read_positions`` reads a revision's stored consumer positions. Both run in a session the
caller holds, so they see (and, with ``lock``, hold) the same snapshot as the rest of its statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from foldline.projection.errors import RevisionRetiredError
from foldline.projection.schema import TableDef


class Session(Protocol):
    """One open database transaction (or a read snapshot): statements with the dialect's parameters."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


def revision_state(s: Session, param: str, table: TableDef, lock: str = "") -> str:
    """This revision's state (``active`` or ``building``); ``RevisionRetiredError`` if it must stop.

    ``lock`` is appended to the statement (PostgreSQL's ``FOR SHARE`` on the row a switch updates).
    """
    rows = s.execute(
        f"SELECT r.state, v.active_revision FROM foldline_revisions r JOIN foldline_views v "
        f"ON v.view = r.view WHERE r.view = {param} AND r.revision = {param}{lock}",
        (table.view, table.revision),
    )
    state, active = rows[0] if rows else ("retired", None)
    if state == "retired" or (state == "building" and active is not None and active > table.revision):
        raise RevisionRetiredError(f"revision {table.revision} of {table.view!r} was superseded by revision {active}")
    return str(state)


def read_positions(s: Session, param: str, view: str, revision: int, topic: str) -> dict[int, int]:
    """The next offset per partition that a revision has stored with its rows."""
    rows = s.execute(
        f'SELECT "partition", next_offset FROM foldline_positions WHERE view = {param} AND '
        f"revision = {param} AND topic = {param}",
        (view, revision, topic),
    )
    return {int(part): int(offset) for part, offset in rows}
