"""An aggregate's history and its state at any version, from the event journal in the projection database.

GET /aggregates/{aggregate}/{aggregate_id}/events   the timeline (paged; ``min_version`` waits for the journal)
GET /aggregates/{aggregate}/{aggregate_id}/state    ``?version=N`` or ``?at=<ISO timestamp>``; default: the latest

The state is the fold of the first N events with the aggregate's own ``evolve``, each event decoded from
the journal with the aggregate's current upcasters: the same fold the command handler runs, never a
scan of the events topic per request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from foldline.aggregate import AggregateSpec
from foldline.errors import FoldlineError
from foldline.gateway.core import Gateway
from foldline.gateway.errors import BadRequest, NotFound, SafeJSON, Unfoldable
from foldline.gateway.views import MAX_VERSION, ViewService, _int

#: Events per page of the timeline, and per read while folding.
PAGE = 1000


def _context(request: Request) -> tuple[Gateway, AggregateSpec, ViewService, str]:
    gateway: Gateway = request.app.state.gateway
    spec = gateway.spec(request.path_params["aggregate"])
    views = gateway.views
    if views is None:
        raise NotFound(
            "this gateway serves no history: start it with --database (and run the aggregate's event journal "
            "projector, `foldline projector --journal ...`)",
            code="no_journal",
        )
    aggregate_id = request.path_params["aggregate_id"]
    if "\x00" in aggregate_id:
        raise BadRequest("an aggregate id cannot hold a NUL character", code="invalid_query")
    return gateway, spec, views, aggregate_id


async def _last_version(views: ViewService, spec: AggregateSpec, aggregate_id: str) -> int:
    last = await views.journal_version(spec.name, aggregate_id)
    if last is None:
        raise NotFound(
            f"{spec.name} {aggregate_id!r} has no events in the journal",
            code="unknown_aggregate_id",
            details={"aggregate": spec.name, "aggregate_id": aggregate_id},
        )
    return last


def _event(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "version": row["version"],
        "type": row["type"],
        "schema_version": row["schema_version"],
        "recorded_at": row["recorded_at"],
        "command_id": row["command_id"],
        "payload": json.loads(row["payload"]),
    }


async def aggregate_events(request: Request) -> Response:
    gateway, spec, views, aggregate_id = _context(request)
    params = request.query_params
    limit = _int(params, "limit", PAGE, 1, PAGE)
    offset = _int(params, "offset", 0, 0, MAX_VERSION)
    if params.get("min_version") not in (None, ""):
        min_version = _int(params, "min_version", 0, 0, MAX_VERSION)
        last = await views.wait_for_version(
            views.journal_view(spec.name), aggregate_id, min_version, gateway.settings.read_timeout_s
        )
    else:
        last = await _last_version(views, spec, aggregate_id)
    rows = await views.journal_rows(spec.name, aggregate_id, limit, offset)
    return SafeJSON(
        {
            "aggregate": spec.name,
            "aggregate_id": aggregate_id,
            "version": last,
            "events": [_event(row) for row in rows],
            "limit": limit,
            "offset": offset,
        }
    )


def _parse_at(raw: str) -> datetime:
    try:
        at = datetime.fromisoformat(raw.strip().replace("z", "Z"))
    except ValueError:
        raise BadRequest(
            f"at must be an ISO 8601 timestamp such as 2026-12-01T10:00:00Z, got {raw[:40]!r}", code="invalid_query"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)  # no zone given: UTC, as events record


def _recorded(row: Mapping[str, Any]) -> datetime | None:
    try:
        at = datetime.fromisoformat(str(row["recorded_at"]))
    except ValueError:
        return None  # an event without a readable time never counts as before a given instant
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def fold_rows(spec: AggregateSpec, rows: list[dict[str, Any]]) -> Any:
    """The state after the journal's ``rows`` (in version order), decoded with the current upcasters."""
    aggregate = spec.aggregate
    state = aggregate.initial_state()
    for row in rows:
        try:
            event = spec.decode_event(row["type"], int(row["schema_version"]), json.loads(row["payload"]))
            state = aggregate.evolve(state, event)
        except (FoldlineError, ValueError, TypeError, KeyError) as exc:
            raise Unfoldable(
                f"event {row.get('version')} ({row.get('type')}) of the journal cannot be folded: {exc}",
                details={"version": row.get("version"), "type": row.get("type")},
            ) from exc
    return state


async def aggregate_state(request: Request) -> Response:
    _, spec, views, aggregate_id = _context(request)
    params = request.query_params
    has_version = params.get("version") not in (None, "")
    has_at = params.get("at") not in (None, "")
    if has_version and has_at:
        raise BadRequest("give version or at, not both", code="invalid_query")
    version = _int(params, "version", 0, 0, MAX_VERSION) if has_version else None
    at = _parse_at(params["at"]) if has_at else None
    last = await _last_version(views, spec, aggregate_id)
    if version is not None and version > last:
        raise NotFound(
            f"{spec.name} {aggregate_id!r} is at version {last}; version {version} does not exist",
            code="version_not_found",
            details={"version": version, "last_version": last},
        )
    upto = last if version is None else version
    rows: list[dict[str, Any]] = []
    while len(rows) < upto:  # versions count from 1 without gaps: the first N rows are versions 1..N
        page = await views.journal_rows(spec.name, aggregate_id, min(PAGE, upto - len(rows)), len(rows))
        rows.extend(page)
        if len(page) == 0:
            break
    rows = [row for row in rows if int(row["version"]) <= upto]
    if at is not None:
        cut = 0
        for row in rows:
            when = _recorded(row)
            if when is None or when > at:
                break
            cut += 1
        rows = rows[:cut]
    state = await asyncio.to_thread(fold_rows, spec, rows)
    return SafeJSON(
        {
            "aggregate": spec.name,
            "aggregate_id": aggregate_id,
            "version": int(rows[-1]["version"]) if rows else 0,
            "last_version": last,
            "recorded_at": rows[-1]["recorded_at"] if rows else None,
            "state": spec.encode_state(state),
        }
    )
