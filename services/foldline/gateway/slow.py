"""Slow and vanishing clients: no connection holds the gateway longer than its timeouts allow.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) and answers 503 past
``limit_concurrency``, but it waits forever for a request's headers and body. Here:

- ``TimedHttp`` (uvicorn's httptools protocol) closes a connection whose request headers are not complete
  within ``header_timeout_s`` of the connection or of the request's first byte, or that sends more than
  ``MAX_HEADER_BYTES`` of them;
- ``BodyDeadline`` (ASGI) answers 408 and closes the connection when a body is not complete within
  ``body_timeout_s`` of its headers;
- ``read_json`` turns a client that went away mid-body into one log line (``ClientClosed``), not a traceback.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from foldline.gateway.errors import RequestTimeout

log = structlog.get_logger("foldline.gateway")

#: The most header bytes a request may send (the request line included) before the connection is closed.
MAX_HEADER_BYTES = 64 * 1024


class TimedHttp(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with a deadline and a size limit on each request's headers."""

    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        super().connection_made(transport)
        self._arm()  # a connection that never sends a byte is a slow client too

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:  # headers complete: the request is running
            self._disarm()
            return
        if self.transport.is_closing():
            return
        if self._header_timer is None:  # bytes of a next request on a kept-alive connection
            self._arm()
        self._header_bytes += len(data)
        if self._header_bytes > MAX_HEADER_BYTES:
            log.info("closing a connection: request headers too large", client=_peer(self), limit=MAX_HEADER_BYTES)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_bytes = 0
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        timer, self._header_timer = getattr(self, "_header_timer", None), None
        if timer is not None:
            timer.cancel()

    def _headers_late(self) -> None:
        self._header_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or (cycle is not None and not cycle.response_complete):
            return
        if self.transport.get_protocol() is not self:  # upgraded (a WebSocket): no longer HTTP/1.1's to time
            return
        log.info(
            "closing a connection: request headers not complete in time",
            client=_peer(self),
            timeout_s=self.header_timeout_s,
        )
        self.transport.close()


def _peer(protocol: Any) -> str:
    client = getattr(protocol, "client", None)
    return f"{client[0]}:{client[1]}" if client else "unknown"


def timed_http(header_timeout_s: float) -> type[TimedHttp]:
    """The protocol class uvicorn instantiates per connection, with this header deadline."""
    return type("GatewayHttp", (TimedHttp,), {"header_timeout_s": header_timeout_s})


def body_too_slow(scope: Scope, seconds: float) -> RequestTimeout:
    """The 408 for a body that did not arrive within ``seconds`` (logged: a slow or hostile client)."""
    client = scope.get("client") or ("unknown", 0)
    log.info(
        "request body not complete in time",
        client=f"{client[0]}:{client[1]}",
        path=scope.get("path"),
        timeout_s=seconds,
    )
    return RequestTimeout(f"the request body did not arrive within {seconds}s", headers={"Connection": "close"})


class BodyDeadline:
    """A request body must be complete within ``seconds`` of the request's start, else 408 (and close)."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        complete = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:  # later reads only wait for a disconnect (streams): no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise body_too_slow(scope, self.seconds) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        await self.app(scope, timed_receive, send)
