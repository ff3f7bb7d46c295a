"""An aggregate's history and its state at any version, from the event journal in the projection database.

GET /aggregates/{aggregate}/events?aggregate_id=ID  the timeline (paged; ``min_version`` waits for the journal)
GET /aggregates/{aggregate}/state?aggregate_id=ID   ``&version=N`` or ``&at=<ISO timestamp>``; default: the latest
GET /aggregates/{aggregate}/{aggregate_id}/events   the same, the id in the path (any id, "commands" or
GET /aggregates/{aggregate}/{aggregate_id}/state    one holding "/" too: these routes come before the others)

Versions the journal lacks (a record it could not decode and passed over) are shown as a gap entry in
the timeline, with the cause the projector recorded; a fold across a gap, or over an event this code
cannot decode or fold, is a 422 that says which event and why.

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
    aggregate_id = request.path_params.get("aggregate_id")
    if aggregate_id is None:  # the query form
        aggregate_id = request.query_params.get("aggregate_id", "")
    if not aggregate_id:
        raise BadRequest("give the aggregate's id: ?aggregate_id=...", code="invalid_query")
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


def _event(spec: AggregateSpec, row: Mapping[str, Any]) -> dict[str, Any]:
    try:
        payload = json.loads(row["payload"])
    except ValueError:  # the journal only writes JSON; a row changed by hand is shown as its text
        payload = row["payload"]
    event = {
        "version": row["version"],
        "type": row["type"],
        "schema_version": row["schema_version"],
        "recorded_at": row["recorded_at"],
        "command_id": row["command_id"],
        "payload": payload,
    }
    try:  # whether this code can read it: an unknown type or a missing upcaster shows here, not as a 500
        spec.decode_event(str(row["type"]), int(row["schema_version"]), payload)
    except Exception as exc:
        event["undecodable"] = f"{type(exc).__name__}: {exc}"[:500]
    return event


def _gap(first: int, last: int, skips: list[dict[str, Any]]) -> dict[str, Any]:
    """A timeline entry for versions ``first..last`` the journal lacks, with the records it passed over."""
    causes = [
        {k: skip[k] for k in ("version", "reason", "error", "topic", "partition", "offset", "recorded_at")}
        for skip in skips
        if skip.get("version") is not None and first <= int(skip["version"]) <= last
    ]
    return {"gap": True, "version": first, "to_version": last, "skipped": causes}


def with_gaps(
    spec: AggregateSpec, rows: list[dict[str, Any]], before: int, after: int | None, skips: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The page's events with a gap entry wherever versions are missing: between rows, after ``before``
    (the version preceding the page) and up to ``after`` (the last version, on the last page)."""
    out: list[dict[str, Any]] = []
    expected = before + 1
    for row in rows:
        version = int(row["version"])
        if version > expected:
            out.append(_gap(expected, version - 1, skips))
        out.append(_event(spec, row))
        expected = version + 1
    if after is not None and after >= expected:
        out.append(_gap(expected, after, skips))
    return out


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
    before = 0
    if offset > 0 and rows:  # the version just before this page: gaps are told only once, on their page
        previous = await views.journal_rows(spec.name, aggregate_id, 1, offset - 1)
        before = int(previous[0]["version"]) if previous else 0
    # The last page shows a missing tail up to the last version; a page past the end (no rows) shows nothing.
    last_page = len(rows) < limit and (bool(rows) or offset == 0)
    end = int(rows[-1]["version"]) if rows else before
    gaps = bool(rows and end - before != len(rows)) or (last_page and end < last)
    skips = await views.journal_skips(spec.name, aggregate_id) if gaps else []
    events = await asyncio.to_thread(with_gaps, spec, rows, before, last if last_page else None, skips)
    body = {
        "aggregate": spec.name,
        "aggregate_id": aggregate_id,
        "version": last,
        "events": events,
        "limit": limit,
        "offset": offset,
    }
    if gaps:
        body["unattributed_skips"] = await views.journal_unattributed_skips(spec.name)
    return SafeJSON(body)


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


def _gap_error(version: int) -> Unfoldable:
    return Unfoldable(
        f"the journal lacks version {version} (it passed over a record it could not read; see the timeline's "
        "gap): no state from that version on can be folded",
        code="history_gap",
        details={"version": version},
    )


def fold_rows(spec: AggregateSpec, rows: list[dict[str, Any]], upto: int | None = None) -> Any:
    """The state after the journal's ``rows`` (versions 1..N in order, N = ``upto`` when given), decoded
    with the current upcasters; ``Unfoldable`` (422) names the first event missing or not foldable."""
    aggregate = spec.aggregate
    state = aggregate.initial_state()
    if upto is not None and len(rows) < upto and all(int(r["version"]) == n for n, r in enumerate(rows, 1)):
        raise _gap_error(len(rows) + 1)  # the missing versions are at the end
    for expected, row in enumerate(rows, start=1):
        version = int(row["version"])
        if version != expected:
            raise _gap_error(expected)
        try:
            event = spec.decode_event(row["type"], int(row["schema_version"]), json.loads(row["payload"]))
            state = aggregate.evolve(state, event)
        except Exception as exc:  # the aggregate's own code may raise anything; the answer says what
            what = "decoded" if isinstance(exc, FoldlineError) else "folded"
            raise Unfoldable(
                f"event {version} ({row.get('type')}, schema {row.get('schema_version')}) cannot be {what} by "
                f"this code: {type(exc).__name__}: {exc}"[:1000],
                details={"version": version, "type": row.get("type"), "schema_version": row.get("schema_version")},
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
    while len(rows) < upto:  # versions 1..N are the first N rows, unless the journal has a gap (fold_rows)
        page = await views.journal_rows(spec.name, aggregate_id, min(PAGE, upto - len(rows)), len(rows))
        rows.extend(page)
        if len(page) == 0 or int(page[-1]["version"]) >= upto:
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
    state = await asyncio.to_thread(fold_rows, spec, rows, upto if at is None else None)
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
