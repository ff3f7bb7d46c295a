"""``POST /aggregates/{aggregate}/commands`` and ``GET /aggregates/{aggregate}/commands/{command_id}``.

A command is checked with the aggregate's own codec before anything is produced, so a malformed or
invalid command never reaches Kafka: the client learns at once (400, or 404 for an unknown type).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import re
from typing import Any, Protocol

import orjson
import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from foldline.aggregate import AggregateSpec
from foldline.errors import CommandError, DecodeError, UnknownTypeError
from foldline.gateway.core import Gateway
from foldline.gateway.errors import (
    BadRequest,
    ClientClosed,
    GatewayTimeout,
    NotFound,
    PayloadTooLarge,
    SafeJSON,
    UnsupportedMediaType,
)
from foldline.records import CommandEnvelope, CommandResult, Status

log = structlog.get_logger("foldline.gateway")

#: The HTTP status of a command's result, by its status.
RESULT_STATUS = {Status.ACCEPTED: 200, Status.REJECTED: 422, Status.CONFLICT: 409, Status.FAILED: 400}


#: Integers a command may carry: what every consumer (orjson, PostgreSQL's BIGINT) can hold.
INT64 = (-(1 << 63), (1 << 63) - 1)
#: How deep a command's JSON may nest (orjson, which writes the record, stops at 255).
MAX_DEPTH = 64


#: What could need ``check_json`` in a body orjson parsed: a run of 19+ digits (an integer past 64 bits,
#: which orjson would read as a float), an escaped NUL. Nesting is bounded by counting brackets.
_SUSPECT = re.compile(rb"\d{19}|\\u0000")


def _json_media_type(content_type: str | None) -> bool:
    """A command body must be JSON; a missing Content-Type is taken as JSON (curl, scripts). Anything a
    browser can post cross-site without a preflight (text/plain, forms) is refused."""
    if content_type is None or not content_type.strip():
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def check_json(value: Any) -> None:
    """Refuse what no record may carry: a string that is not valid Unicode (a lone surrogate, which UTF-8
    cannot encode), a NUL character (PostgreSQL text cannot hold it), an integer beyond 64 bits, a number
    that is not finite, nesting deeper than ``MAX_DEPTH``."""
    stack: list[tuple[str, int, Any]] = [("", 0, value)]
    while stack:  # iterative: a deep document must not recurse
        where, depth, item = stack.pop()
        if isinstance(item, dict | list) and depth >= MAX_DEPTH:
            raise BadRequest(f"the body nests deeper than {MAX_DEPTH} levels", code="malformed_json")
        if isinstance(item, dict):
            for key, child in item.items():
                _check_str(key, f"{where}.{key!r}" if where else repr(key), "key")
                stack.append((f"{where}.{key}" if where else key, depth + 1, child))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", depth + 1, child) for i, child in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            raise BadRequest(
                f"{where or 'the body'}: the number is not finite (NaN, Infinity or out of range)",
                code="invalid_value",
                details=_at(where),
            )
        elif isinstance(item, str):
            _check_str(item, where or "the body", "value")
        elif isinstance(item, int) and not isinstance(item, bool) and not INT64[0] <= item <= INT64[1]:
            raise BadRequest(
                f"{where or 'the body'}: the integer does not fit in 64 bits", code="invalid_value", details=_at(where)
            )


def _check_str(text: str, where: str, what: str) -> None:
    if "\x00" in text:
        raise BadRequest(
            f"{where}: a NUL character is not allowed in a {what}", code="invalid_value", details=_at(where)
        )
    try:
        text.encode()
    except UnicodeEncodeError:
        raise BadRequest(
            f"{where}: the {what} holds a lone surrogate (\\u escape) that is not a character",
            code="invalid_value",
            details=_at(where),
        ) from None


def _at(where: str) -> dict[str, Any]:
    return {"field": where.encode(errors="replace").decode()} if where else {}


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request body as JSON; 415 unless JSON, 413 past ``max_bytes`` (declared or actual), 400 if
    malformed or holding what no record may carry (``check_json``)."""
    if not _json_media_type(request.headers.get("content-type")):
        raise UnsupportedMediaType(
            f"send the command as application/json, not {request.headers['content-type']!r}",
            details={"accepted": ["application/json"]},
        )
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(f"Content-Length must be a number, got {declared!r}")
        if int(declared) > max_bytes:
            raise PayloadTooLarge(
                f"the body has {declared} bytes; at most {max_bytes} are accepted", details={"max_bytes": max_bytes}
            )
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise PayloadTooLarge(f"the body exceeds {max_bytes} bytes", details={"max_bytes": max_bytes})
    except ClientDisconnect:
        client = request.client
        log.info("client disconnected before sending its whole body", client=client and f"{client.host}:{client.port}")
        raise ClientClosed("the client disconnected before sending its whole body") from None
    if not body:
        raise BadRequest("the request needs a JSON body", code="malformed_json")
    return parse_json(body)


def parse_json(body: bytes | bytearray) -> Any:
    """A body as JSON, checked (``check_json``). orjson first: it refuses invalid UTF-8, lone surrogates,
    NaN and infinities, so a body it reads without a ``_SUSPECT`` token or deep nesting passes every
    check, at a fraction of the cost. Anything else takes the stdlib path and its messages, as before."""
    if body.count(b"[") + body.count(b"{") < MAX_DEPTH and _SUSPECT.search(body) is None:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # answered below, with the stdlib's message
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BadRequest(f"the body is not valid UTF-8 JSON: {exc}", code="malformed_json") from exc
    check_json(data)
    return data


def query_bool(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise BadRequest(f"query parameter {name!r} must be true or false, got {raw!r}", code="invalid_query")


def query_timeout(request: Request, default: float, maximum: float) -> float:
    raw = request.query_params.get("timeout")
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"timeout must be a number of seconds, got {raw!r}", code="invalid_query") from None
    if not 0 < value <= maximum:
        raise BadRequest(f"timeout must be above 0 and at most {maximum} seconds, got {raw!r}", code="invalid_query")
    return value


class Aggregates(Protocol):
    def spec(self, aggregate: str) -> AggregateSpec: ...


def parse_envelope(gateway: Aggregates, aggregate: str, data: Any) -> CommandEnvelope:
    """Check the request envelope (``CommandEnvelope.from_json``) and the payload (with the aggregate's
    codec); the record to produce."""
    try:
        envelope = CommandEnvelope.from_json(data, submitted=True)
    except DecodeError as exc:
        raise BadRequest(exc.message, code="invalid_envelope") from exc
    spec = gateway.spec(aggregate)
    try:
        spec.decode_command(envelope.type, envelope.payload)
    except UnknownTypeError as exc:
        raise NotFound(
            exc.message, code="unknown_command_type", details={"type": envelope.type, "known": sorted(spec.commands)}
        ) from exc
    except CommandError as exc:
        raise BadRequest(exc.message, code=exc.code, details=exc.details) from exc
    except Exception as exc:  # a codec surprise is still the client's bad input, never a 500
        log.warning("payload check raised", aggregate=aggregate, type=envelope.type, error=repr(exc))
        raise BadRequest(f"invalid payload: {exc}", code="invalid_payload") from exc
    # The payload was checked against the deployed command class: its schema version says so, so that a
    # handler running newer code upcasts it instead of reading it as the current version.
    version = spec.commands[envelope.type].version
    return envelope if envelope.schema_version == version else dataclasses.replace(envelope, schema_version=version)


def location(aggregate: str, command_id: str) -> str:
    return f"/aggregates/{aggregate}/commands/{command_id}"


async def post_command(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    aggregate = request.path_params["aggregate"]
    gateway.spec(aggregate)  # 404 before reading the body
    settings = gateway.settings
    if request.scope.get("query_string"):
        wait = query_bool(request, "wait", True)
        timeout = query_timeout(request, settings.command_timeout_s, settings.max_command_timeout_s)
    else:  # the usual request: no query to parse
        wait, timeout = True, settings.command_timeout_s
    envelope = parse_envelope(gateway, aggregate, await read_json(request, settings.max_body_bytes))
    where = location(aggregate, envelope.command_id)
    if not wait:
        topic = gateway.topics[aggregate].commands
        pending = _pending(aggregate, envelope, where)
        try:
            async with asyncio.timeout(timeout):
                await gateway.producer.send(topic, envelope.aggregate_id, envelope.to_bytes())
        except TimeoutError:
            raise GatewayTimeout(
                f"Kafka did not acknowledge the command within {timeout}s", details=pending, headers={"Location": where}
            ) from None
        return SafeJSON(pending, status_code=202, headers={"Location": where})
    result = await await_result(gateway, aggregate, envelope, timeout, where)
    return result_response(result, RESULT_STATUS[result.status], {"Location": where})


def _pending(aggregate: str, envelope: CommandEnvelope, where: str) -> dict[str, str]:
    """A command sent (or maybe sent) whose result is not known yet: a 202's body, a 504's details."""
    return {
        "command_id": envelope.command_id,
        "aggregate": aggregate,
        "aggregate_id": envelope.aggregate_id,
        "status": "pending",
        "location": where,
    }


async def await_result(
    gateway: Gateway, aggregate: str, envelope: CommandEnvelope, timeout: float, where: str
) -> CommandResult:
    """Produce ``envelope`` and wait for its result; 504 past ``timeout``, 503 if Kafka refuses it."""
    future = gateway.hub.waiter(aggregate, envelope.command_id)  # before producing: the result may be quick
    # A timer that fails the future is cheaper than asyncio.timeout (no task cancellation to undo).
    deadline = asyncio.get_running_loop().call_later(timeout, _expire, future)
    try:
        gateway.producer.send_nowait(
            gateway.topics[aggregate].commands, envelope.aggregate_id, envelope.to_bytes(), future
        )
        return await future
    except TimeoutError:
        raise GatewayTimeout(
            f"no result within {timeout}s; the command may still be handled: GET {where} later",
            details=_pending(aggregate, envelope, where),
            headers={"Location": where},
        ) from None
    finally:
        deadline.cancel()
        gateway.hub.forget(aggregate, envelope.command_id, future)


def result_response(result: CommandResult, status: int, headers: dict[str, str] | None = None) -> Response:
    """A result as JSON: orjson (compact, UTF-8, as ``SafeJSON`` writes it) unless it cannot encode it."""
    try:
        body = orjson.dumps(result.to_json())
    except orjson.JSONEncodeError:  # a lone surrogate salvaged from a broken record: SafeJSON replaces it
        return SafeJSON(result.to_json(), status_code=status, headers=headers)
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


async def get_command(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    aggregate = request.path_params["aggregate"]
    # The query form (GET .../commands?command_id=) reaches any id, "events" and "state" included.
    command_id = request.path_params.get("command_id") or request.query_params.get("command_id", "")
    gateway.spec(aggregate)
    if not command_id:
        raise BadRequest("give the command's id: .../commands/{command_id} or ?command_id=", code="invalid_query")
    result = gateway.hub.get(aggregate, command_id)
    if result is None:
        raise NotFound(
            f"no result for command {command_id!r} of {aggregate} (yet): it is unknown, still "
            "pending, or older than this replica's index",
            code="unknown_command",
            details={"command_id": command_id},
        )
    return result_response(result, 200)
