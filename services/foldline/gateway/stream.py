"""Server-Sent Events: command results as they arrive, and view rows as they change.

Results are pushed by the results reader (no polling). View updates are poll-based: the stream
re-reads the rows every ``view_poll_interval_s`` and sends them when they differ from the last sent.
A comment line goes out every ``sse_heartbeat_s`` so proxies keep the connection open.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from foldline.gateway.core import Gateway
from foldline.gateway.errors import HttpError

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(event: str, data: Any, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


async def stream_results(request: Request) -> Response:
    """``GET /aggregates/{aggregate}/stream[?aggregate_id=X]``: one ``result`` event per command result."""
    gateway: Gateway = request.app.state.gateway
    aggregate = request.path_params["aggregate"]
    gateway.spec(aggregate)
    aggregate_id = request.query_params.get("aggregate_id") or None
    subscriber = gateway.hub.subscribe(aggregate, aggregate_id)
    heartbeat = gateway.settings.sse_heartbeat_s

    async def events() -> AsyncIterator[str]:
        try:
            yield f"retry: 2000\n: subscribed to {aggregate} results\n\n"
            while True:
                try:
                    item = await asyncio.wait_for(subscriber.queue.get(), heartbeat)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if item is None:  # overflowed, or the gateway is shutting down
                    reason = "overflow" if subscriber.overflowed else "shutdown"
                    yield sse("end", {"reason": reason})
                    return
                yield sse("result", item.to_json(), item.command_id)
        finally:
            gateway.hub.unsubscribe(subscriber)

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


async def stream_view(request: Request) -> Response:
    """``GET /views/{view}/stream?<column>=<value>...``: a ``rows`` event whenever the matching rows change."""
    gateway: Gateway = request.app.state.gateway
    views = gateway.require_views()
    view = request.path_params["view"]
    query = views.parse_query(view, request.query_params, allow_wait=False)
    first = await views.rows(view, query)  # an unknown view or column answers 404/400, not a broken stream
    interval = gateway.settings.view_poll_interval_s
    heartbeat = gateway.settings.sse_heartbeat_s
    closing = gateway.closing

    async def events() -> AsyncIterator[str]:
        yield f"retry: 2000\n: polling {view} every {interval}s\n\n"
        last: list[dict[str, Any]] | None = None
        quiet = 0.0
        sequence = 0
        rows: list[dict[str, Any]] | None = first
        while not closing.is_set():
            if rows is None:
                try:
                    rows = await views.rows(view, query)
                except HttpError as exc:  # the database went away mid-stream: say so, keep polling
                    yield sse("error", {"code": exc.code, "message": exc.message})
                    rows = last
            if rows != last:
                sequence += 1
                yield sse("rows", {"view": view, "rows": rows}, str(sequence))
                last, quiet = rows, 0.0
            elif quiet >= heartbeat:
                yield ": keep-alive\n\n"
                quiet = 0.0
            rows = None
            try:
                await asyncio.wait_for(closing.wait(), interval)
            except TimeoutError:
                quiet += interval
        yield sse("end", {"reason": "shutdown"})

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)
