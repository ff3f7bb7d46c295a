"""``POST /aggregates/{aggregate}/commands``, the gateway's busiest request, in one coroutine.

The general chain (``Instrumented`` -> ``BodyDeadline`` -> ``BearerAuth`` -> ``CommandFastPath`` ->
starlette) costs a coroutine, a wrapped ``receive`` or ``send`` and an ``asyncio.timeout`` per layer,
plus a ``Request``, its ``Headers`` and body stream, and a ``Response``. ``CommandHotPath`` sits in
front of it and does the same work inline for the usual request: a known aggregate, no query string,
a declared JSON body within the size limit, an accepted token (or none needed). Anything else (and
every refusal decided before the body is read) goes down the general chain, so those answers are the
chain's own; the refusals decided later (body, envelope, payload, Kafka, timeout) are the same
``HttpError`` answers ``post_command`` gives, counted under the same metric series.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections.abc import Callable

import orjson
import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from foldline.gateway.commands import (
    RESULT_STATUS,
    _json_media_type,
    await_result,
    location,
    parse_envelope,
    parse_json,
    result_response,
)
from foldline.gateway.core import Gateway
from foldline.gateway.errors import BadRequest, ClientClosed, HttpError, PayloadTooLarge
from foldline.gateway.slow import body_too_slow

log = structlog.get_logger("foldline.gateway")

#: The route's own pattern (as ``CommandFastPath`` and the router match it).
PATH = re.compile(r"/aggregates/([^/]+)/commands")
ROUTE = "post_command"  # the route label of its metrics, as the router's endpoint name gives it


class CommandHotPath:
    """The usual command POST answered inline; every other request to ``app`` (the general chain)."""

    def __init__(self, app: ASGIApp, gateway: Gateway, observe: Callable[[str, str, int, float], None]) -> None:
        self.app = app
        self.gateway = gateway
        self.observe = observe  # Instrumented.observe: (aggregate, route, status, perf_counter at start)
        self.token = gateway.settings.token.encode()
        self.max_bytes = gateway.settings.max_body_bytes
        self.body_timeout_s = gateway.settings.body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and not scope.get("query_string")
            and not scope.get("root_path")
        ):
            match = PATH.fullmatch(scope["path"])
            if match is not None and match.group(1) in self.gateway.specs and self._usual(scope["headers"]):
                await self._post(scope, receive, send, match.group(1))
                return
        await self.app(scope, receive, send)

    def _usual(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """The usual headers: a JSON (or no) Content-Type, a Content-Length within the limit, the bearer
        token when one is set. Else the general chain answers (and refuses) the request."""
        content_type = length = authorization = None
        for name, value in headers:  # the first of each, as starlette's Headers.get reads them
            if name == b"content-type":
                content_type = value if content_type is None else content_type
            elif name == b"content-length":
                length = value if length is None else length
            elif name == b"authorization":
                authorization = value if authorization is None else authorization
        if length is None or not length.isdigit() or int(length) > self.max_bytes:
            return False
        if content_type is not None and not _json_media_type(content_type.decode("latin-1")):
            return False
        if self.token:
            scheme, _, credentials = (authorization or b"").decode("latin-1").partition(" ")
            credentials = credentials.strip()
            return (
                scheme.lower() == "bearer"
                and bool(credentials)
                and hmac.compare_digest(credentials.encode(), self.token)
            )
        return True

    async def _post(self, scope: Scope, receive: Receive, send: Send, aggregate: str) -> None:
        started = time.perf_counter()
        status = 500  # what uvicorn answers if this raises past the HttpErrors
        try:
            try:
                body = await self._body(scope, receive)
                gateway = self.gateway
                envelope = parse_envelope(gateway, aggregate, parse_json(body))
                where = location(aggregate, envelope.command_id)
                result = await await_result(gateway, aggregate, envelope, gateway.settings.command_timeout_s, where)
            except HttpError as exc:  # as the app's exception handler answers it
                response = exc.response()
                status = response.status_code
                await response(scope, receive, send)
                return
            status = RESULT_STATUS[result.status]
            try:
                encoded = orjson.dumps(result.to_json())
            except orjson.JSONEncodeError:  # a lone surrogate: as result_response answers it
                await result_response(result, status, {"Location": where})(scope, receive, send)
                return
            # The headers starlette's Response writes for result_response, in its order.
            headers = [
                (b"location", where.encode("latin-1")),
                (b"content-length", str(len(encoded)).encode("latin-1")),
                (b"content-type", b"application/json"),
            ]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": encoded})
        finally:
            self.observe(aggregate, ROUTE, status, started)

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole body within ``body_timeout_s`` of the request's start (``BodyDeadline``), at most
        ``max_body_bytes`` of it (``read_json``)."""
        task = asyncio.current_task()
        assert task is not None
        late: list[bool] = []

        def expire() -> None:
            late.append(True)
            task.cancel()

        timer = asyncio.get_running_loop().call_later(self.body_timeout_s, expire)
        chunks: bytes = b""
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":  # http.disconnect
                    client = scope.get("client")
                    log.info(
                        "client disconnected before sending its whole body",
                        client=client and f"{client[0]}:{client[1]}",
                    )
                    raise ClientClosed("the client disconnected before sending its whole body")
                chunk: bytes = message.get("body", b"")
                chunks += chunk
                if len(chunks) > self.max_bytes:
                    raise PayloadTooLarge(
                        f"the body exceeds {self.max_bytes} bytes", details={"max_bytes": self.max_bytes}
                    )
                if not message.get("more_body", False):
                    break
        except asyncio.CancelledError:
            if not late or task.uncancel() > 0:  # not (only) our deadline: someone else's cancel
                raise
            raise body_too_slow(scope, self.body_timeout_s) from None
        finally:
            timer.cancel()
        if not chunks:
            raise BadRequest("the request needs a JSON body", code="malformed_json")
        return chunks
