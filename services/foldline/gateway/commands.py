"""``POST /aggregates/{aggregate}/commands`` and ``GET /aggregates/{aggregate}/commands/{command_id}``.

A command is checked with the aggregate's own codec before anything is produced, so a malformed or
invalid command never reaches Kafka: the client learns at once (400, or 404 for an unknown type).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from foldline.aggregate import AggregateSpec
from foldline.errors import CommandError, DecodeError, UnknownTypeError
from foldline.gateway.core import Gateway
from foldline.gateway.errors import BadRequest, GatewayTimeout, NotFound, PayloadTooLarge
from foldline.records import CommandEnvelope, CommandResult, Status

log = structlog.get_logger("foldline.gateway")

#: The HTTP status of a command's result, by its status.
RESULT_STATUS = {Status.ACCEPTED: 200, Status.REJECTED: 422, Status.CONFLICT: 409, Status.FAILED: 400}


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request body as JSON; 413 past ``max_bytes`` (declared or actual), 400 if malformed."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(f"Content-Length must be a number, got {declared!r}")
        if int(declared) > max_bytes:
            raise PayloadTooLarge(
                f"the body has {declared} bytes; at most {max_bytes} are accepted", details={"max_bytes": max_bytes}
            )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"the body exceeds {max_bytes} bytes", details={"max_bytes": max_bytes})
    if not body:
        raise BadRequest("the request needs a JSON body", code="malformed_json")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BadRequest(f"the body is not valid UTF-8 JSON: {exc}", code="malformed_json") from exc


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
    return envelope


def location(aggregate: str, command_id: str) -> str:
    return f"/aggregates/{aggregate}/commands/{command_id}"


async def post_command(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    aggregate = request.path_params["aggregate"]
    gateway.spec(aggregate)  # 404 before reading the body
    settings = gateway.settings
    wait = query_bool(request, "wait", True)
    timeout = query_timeout(request, settings.command_timeout_s, settings.max_command_timeout_s)
    envelope = parse_envelope(gateway, aggregate, await read_json(request, settings.max_body_bytes))
    topic = gateway.topics[aggregate].commands
    where = location(aggregate, envelope.command_id)
    pending = {
        "command_id": envelope.command_id,
        "aggregate": aggregate,
        "aggregate_id": envelope.aggregate_id,
        "status": "pending",
        "location": where,
    }
    if not wait:
        try:
            async with asyncio.timeout(timeout):
                await gateway.producer.send(topic, envelope.aggregate_id, envelope.to_bytes())
        except TimeoutError:
            raise GatewayTimeout(
                f"Kafka did not acknowledge the command within {timeout}s", details=pending, headers={"Location": where}
            ) from None
        return JSONResponse(pending, status_code=202, headers={"Location": where})
    future = gateway.hub.waiter(aggregate, envelope.command_id)  # before producing: the result may be quick
    try:
        async with asyncio.timeout(timeout):
            gateway.producer.send_nowait(topic, envelope.aggregate_id, envelope.to_bytes(), future)
            result: CommandResult = await future
    except TimeoutError:
        raise GatewayTimeout(
            f"no result within {timeout}s; the command may still be handled: GET {where} later",
            details=pending,
            headers={"Location": where},
        ) from None
    finally:
        gateway.hub.forget(aggregate, envelope.command_id, future)
    return JSONResponse(result.to_json(), status_code=RESULT_STATUS[result.status], headers={"Location": where})


async def get_command(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    aggregate = request.path_params["aggregate"]
    command_id = request.path_params["command_id"]
    gateway.spec(aggregate)
    result = gateway.hub.get(aggregate, command_id)
    if result is None:
        raise NotFound(
            f"no result for command {command_id!r} of {aggregate} (yet): it is unknown, still "
            "pending, or older than this replica's index",
            code="unknown_command",
            details={"command_id": command_id},
        )
    return JSONResponse(result.to_json())
