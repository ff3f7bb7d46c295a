"""The gateway as an ASGI application (starlette), served by uvicorn.

POST /aggregates/{aggregate}/commands              a command envelope; waits for its result
GET  /aggregates/{aggregate}/commands/{command_id} a result by command id (any replica; or ?command_id=)
GET  /aggregates/{aggregate}/stream                SSE: results as they arrive
GET  /aggregates/{aggregate}/dead-letters          the newest dead letters, decoded, with their cause
GET  /aggregates/{aggregate}/{id}/events           the aggregate's event timeline (from the event journal)
GET  /aggregates/{aggregate}/{id}/state            its state at ?version=N or ?at=<timestamp> (a fold)
     (both also as /aggregates/{aggregate}/events|state?aggregate_id=ID)
GET  /views/{view}/rows                            rows of a projection (read-after-write: min_version)
GET  /views/{view}/stream                          SSE: rows whenever they change (poll-based)
GET  /aggregates, /views, /openapi.json, /healthz, /readyz, /metrics
GET  /, /console/{file}                            the web console (static files; its API calls send the token)
"""

from __future__ import annotations

import contextlib
import hmac
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from foldline.gateway import commands, console, deadletters, history, stream
from foldline.gateway.core import Gateway
from foldline.gateway.errors import HttpError, SafeJSON, Unauthorized
from foldline.gateway.hotpath import CommandHotPath
from foldline.gateway.openapi import dataclass_schema, openapi_document
from foldline.gateway.slow import BodyDeadline
from foldline.observability import metrics, series

log = structlog.get_logger("foldline.gateway")

#: Served without a token, so probes and Prometheus need no secret.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


#: Rows hold Decimals and dates (written as strings); the body always encodes (see ``SafeJSON``).
JSON = SafeJSON


# -- endpoints ---------------------------------------------------------------------------------------------
async def healthz(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    ok = gateway.live()
    return PlainTextResponse("ok\n" if ok else f"unhealthy: {gateway.reader.error}\n", status_code=200 if ok else 503)


async def readyz(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    if gateway.views is not None and not gateway.views.ready():
        await gateway.views.start()  # the database was away at start: the probe retries opening it
    if gateway.ready():
        return PlainTextResponse("ok\n")
    why = []
    if not gateway.reader.caught_up:
        why.append("the results reader has not reached the end of its topics yet")
    if gateway.views is not None and not gateway.views.ready():
        why.append(f"the projection database is not open: {gateway.views.error}")
    if gateway.reader.error:
        why.append(f"the results reader failed: {gateway.reader.error}")
    return PlainTextResponse("not ready: " + "; ".join(why) + "\n", status_code=503)


async def prometheus(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    views: list[str] = []
    if gateway.views is not None:
        try:  # the declared views, or (none declared) those the database lists now
            views = sorted(await gateway.views.served())
        except HttpError:  # the database is away: document any view name
            views = []
    return JSON(openapi_document(gateway.specs, views, auth=bool(gateway.settings.token)))


async def list_aggregates(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    return JSON(
        {
            "aggregates": [
                {
                    "name": name,
                    "commands": sorted(spec.commands),
                    # the fields of each command (names and types from the codec): the console's forms
                    "payloads": {name: dataclass_schema(kind.cls) for name, kind in sorted(spec.commands.items())},
                    "history": gateway.views is not None and name in gateway.views.journals,
                    "topics": {
                        "commands": gateway.topics[name].commands,
                        "results": gateway.topics[name].results,
                        "dead_letters": gateway.topics[name].dead_letters,
                    },
                }
                for name, spec in sorted(gateway.specs.items())
            ]
        }
    )


async def list_views(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    if gateway.views is None:
        return JSON({"views": []})
    served = await gateway.views.served()
    return JSON({"views": [{"name": v, "aggregate": a} for v, a in sorted(served.items())]})


async def view_rows(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    views = gateway.require_views()
    view = request.path_params["view"]
    query = views.parse_query(view, request.query_params)
    body: dict[str, Any] = {"view": view}
    if query.min_version is not None and query.aggregate_id is not None:
        body["version"], rows = await views.rows_at_version(view, query)
    else:
        rows = await views.rows(view, query)
    body.update(rows=rows, limit=query.limit, offset=query.offset)
    return JSON(body)


# -- middleware --------------------------------------------------------------------------------------------
class Instrumented:
    """Counts every request by route and status, and times it (``foldline_gateway_*``)."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway
        #: Children of the two metrics by (aggregate, route, status): a few dozen keys (routes x statuses).
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            endpoint = scope.get("endpoint")
            if endpoint is not None:
                route = getattr(endpoint, "__name__", "unmatched")
            else:  # refused before routing (no token), or no route matched
                route = "unauthorized" if status == 401 else "unmatched"
            params = scope.get("path_params") or {}
            aggregate = params.get("aggregate", "")
            if aggregate not in self.gateway.specs:
                view = params.get("view", "")
                aggregate = self.gateway.views.aggregate_of(view) if self.gateway.views and view else ""
            self.observe(aggregate, route, status, started)

    def observe(self, aggregate: str, route: str, status: int, started: float) -> None:
        """Count one answered request and its time since ``started`` (``time.perf_counter``)."""
        children = self._series.get((aggregate, route, status))
        if children is None:  # labels() costs more than the observation: keep each child
            children = self._series[aggregate, route, status] = (
                metrics.GATEWAY_REQUESTS.labels(aggregate, route, str(status)),
                metrics.GATEWAY_LATENCY.labels(aggregate, route),
            )
        children[0].inc()
        children[1].observe(time.perf_counter() - started)


class BearerAuth:
    """``Authorization: Bearer <token>`` on every path but the probes and ``/metrics``, when a token is set."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if self.token and path and path not in OPEN_PATHS and not console.is_console_path(path):
            scheme, _, credentials = Headers(scope=scope).get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not credentials.strip():
                await Unauthorized("send Authorization: Bearer <token>").response()(scope, receive, send)
                return
            if not hmac.compare_digest(credentials.strip().encode(), self.token):
                await Unauthorized("the bearer token is not valid").response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


class CommandFastPath:
    """``POST /aggregates/{aggregate}/commands`` of a known aggregate straight to ``post_command``, as the
    router would call it: starlette's router and its two exception layers cost ~10% of the gateway's
    CPU per command. Everything else (an unknown aggregate too) goes through starlette, unchanged."""

    PATH = re.compile(r"/aggregates/([^/]+)/commands")  # the route's own pattern

    def __init__(self, app: Starlette, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            match = self.PATH.fullmatch(scope["path"])
            if match is not None and match.group(1) in self.gateway.specs:
                scope["app"] = self.app  # what starlette sets, and the route's own markers (see Instrumented)
                scope["endpoint"] = commands.post_command
                scope["path_params"] = {"aggregate": match.group(1)}
                request = Request(scope, receive, send)
                try:
                    response = await commands.post_command(request)
                except HttpError as exc:  # as the app's exception handler answers it
                    response = exc.response()
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpError)
    return exc.response()


async def _starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return SafeJSON({"error": {"code": code, "message": exc.detail}}, status_code=exc.status_code, headers=exc.headers)


def create_app(gateway: Gateway) -> ASGIApp:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    routes = [
        # The busiest route first (starlette tries routes in order); no route before it matches its paths.
        Route("/aggregates/{aggregate}/commands", commands.post_command, methods=["POST"]),
        Route("/aggregates/{aggregate}/commands", commands.get_command, methods=["GET"]),
        Route("/", console.console_page),
        Route("/console/{name}", console.console_file),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", prometheus),
        Route("/openapi.json", openapi),
        Route("/aggregates", list_aggregates),
        Route("/aggregates/{aggregate}/stream", stream.stream_results),
        Route("/aggregates/{aggregate}/dead-letters", deadletters.dead_letters),
        Route("/aggregates/{aggregate}/events", history.aggregate_events),
        Route("/aggregates/{aggregate}/state", history.aggregate_state),
        # Before commands/{command_id}: an aggregate id is never shadowed by a fixed segment ("commands",
        # "stream", ...), and may hold "/" (:path). A command id "events" or "state": use ?command_id=.
        Route("/aggregates/{aggregate}/{aggregate_id:path}/events", history.aggregate_events),
        Route("/aggregates/{aggregate}/{aggregate_id:path}/state", history.aggregate_state),
        Route("/aggregates/{aggregate}/commands/{command_id}", commands.get_command),
        Route("/views", list_views),
        Route("/views/{view}/rows", view_rows),
        Route("/views/{view}/stream", stream.stream_view),
    ]
    app = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HttpError: _http_error, HTTPException: _starlette_error}
    )
    app.state.gateway = gateway
    # The command routes' 5xx series exist at 0 from start, so an alert's rate() sees the first one.
    series.gateway_started(gateway.specs, [commands.post_command.__name__, commands.get_command.__name__])
    fast = CommandFastPath(app, gateway)
    instrumented = Instrumented(
        BodyDeadline(BearerAuth(fast, gateway.settings.token), gateway.settings.body_timeout_s), gateway
    )
    return CommandHotPath(instrumented, gateway, instrumented.observe)
