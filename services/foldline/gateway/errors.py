"""Errors the gateway answers with: each carries its HTTP status and a stable ``code`` word.

The body of every such answer is ``{"error": {"code": ..., "message": ..., "details": {...}}}``. Each
one also sits in one of foldline's groups (``foldline.errors``): the client's own mistakes (4xx) are
``CommandError``s, an unavailable dependency or a timeout (503, 504) a ``RetryableError``.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse

from foldline.errors import CommandError, FoldlineError, PermanentError, RetryableError, WaitTimeoutError


class SafeJSON(JSONResponse):
    """JSON that always encodes: a lone surrogate a client sent (echoed in a message) becomes U+FFFD
    instead of failing the response; values JSON lacks (Decimal, dates) are written as strings."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, separators=(",", ":"), default=_json_default)
        return text.encode("utf-8", errors="replace")


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    isoformat = getattr(value, "isoformat", None)  # dates, times, datetimes
    return isoformat() if callable(isoformat) else str(value)  # Decimal and the rest: their text


class HttpError(FoldlineError):
    """A request the gateway refuses or cannot serve; ``status`` is the HTTP status. Only its
    subclasses are raised, each in one of the groups."""

    status = 400
    code = "bad_request"

    def __init__(
        self, message: str, *, details: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": {"code": self.code, "message": self.message}}
        if self.details:
            body["error"]["details"] = self.details
        return SafeJSON(body, status_code=self.status, headers=self.headers)


class BadRequest(HttpError, CommandError):
    """Malformed JSON, a bad envelope field, an invalid payload or query parameter."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None) -> None:
        HttpError.__init__(self, message, details=details)
        if code is not None:
            self.code = code


class Unauthorized(HttpError, CommandError):
    status = 401
    code = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="foldline"'})


class NotFound(HttpError, CommandError):
    status = 404
    code = "not_found"

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        if code is not None:
            self.code = code


class RequestTimeout(HttpError, CommandError):
    """The client did not send its whole body within the gateway's body timeout."""

    status = 408
    code = "request_timeout"


class ClientClosed(HttpError, CommandError):
    """The client went away before its request was read (logged, never answered: no one listens)."""

    status = 499
    code = "client_closed"


class PayloadTooLarge(HttpError, CommandError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(HttpError, CommandError):
    """A command body that is not declared as JSON (a browser form or text/plain post is refused)."""

    status = 415
    code = "unsupported_media_type"


class Unfoldable(HttpError, PermanentError):
    """The history asked for cannot be folded: the journal holds an event this code cannot decode or fold
    (a missing upcaster, a failing evolve), or lacks one (a gap). A well-formed request for a state that
    does not exist, answered 422 with the event and the reason; retrying will not help."""

    status = 422
    code = "unfoldable_history"

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        if code is not None:
            self.code = code


class Unavailable(HttpError, RetryableError):
    """Kafka or the projection database is away, or the producer's queue is full; retry later."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class GatewayTimeout(HttpError, WaitTimeoutError):
    """A command's result or a projection's version did not arrive in time."""

    status = 504
    code = "timeout"
