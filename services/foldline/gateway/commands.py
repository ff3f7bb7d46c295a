"""``POST /aggregates/{aggregate}/commands`` and ``GET /aggregates/{aggregate}/commands/{command_id}``.

A command is checked with the aggregate's own codec before anything is produced, so a malformed or
invalid command never reaches Kafka: the client learns at once (400, or 404 for an unknown type).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from foldline.aggregate import AggregateSpec
from foldline.errors import CommandError, UnknownTypeError
from foldline.gateway.errors import BadRequest, GatewayTimeout, NotFound, PayloadTooLarge
from foldline.ids import AggregateId, CommandId
from foldline.records import CommandEnvelope

if TYPE_CHECKING:
    from foldline.gateway.app import Gateway

log = structlog.get_logger("foldline.gateway")

COMMAND_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_AGGREGATE_ID = 256
ENVELOPE_FIELDS = frozenset({"aggregate_id", "type", "payload", "expected_version", "command_id"})
#: The HTTP status of a command's result, by its status.
RESULT_STATUS = {"accepted": 200, "rejected": 422, "conflict": 409, "failed": 400}


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request body as JSON; 413 past ``max_bytes`` (declared or actual), 400 if malformed."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(f"Content-Length must be a number, got {declared!r}")
        if int(declared) > max_bytes:
            raise PayloadTooLarge(f"the body has {declared} bytes; at most {max_bytes} are accepted",
                                  details={"max_bytes": max_bytes})
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
        raise BadRequest(f"timeout must be above 0 and at most {maximum} seconds, got {raw!r}",
                         code="invalid_query")
    return value


class Aggregates(Protocol):
    def spec(self, aggregate: str) -> AggregateSpec: ...


def parse_envelope(gateway: Aggregates, aggregate: str, data: Any) -> CommandEnvelope:
    """Check the request envelope and the payload (with the aggregate's codec); build the record."""
    if not isinstance(data, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(data).__name__}", code="invalid_envelope")
    unknown = data.keys() - ENVELOPE_FIELDS
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(sorted(unknown))}; expected some of "
                         f"{', '.join(sorted(ENVELOPE_FIELDS))}", code="invalid_envelope")
    aggregate_id = data.get("aggregate_id")
    if not isinstance(aggregate_id, str) or not aggregate_id.strip() or len(aggregate_id) > MAX_AGGREGATE_ID:
        raise BadRequest(f"aggregate_id must be a non-empty string of at most {MAX_AGGREGATE_ID} characters",
                         code="invalid_envelope")
    type_ = data.get("type")
    if not isinstance(type_, str) or not type_:
        raise BadRequest("type must be the name of a command, such as CreateInvoice", code="invalid_envelope")
    payload = data.get("payload", {})
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise BadRequest(f"payload must be a JSON object, got {type(payload).__name__}", code="invalid_envelope")
    expected = data.get("expected_version")
    if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int) or expected < 0):
        raise BadRequest(f"expected_version must be null or a non-negative integer, got {expected!r}",
                         code="invalid_envelope")
    command_id = data.get("command_id")
    if command_id is None:
        command_id = new_command_id()
    elif not isinstance(command_id, str) or not COMMAND_ID.match(command_id):
        raise BadRequest("command_id must be 1-128 characters of letters, digits and . _ : - "
                         "(starting with a letter or digit)", code="invalid_envelope")
    spec = gateway.spec(aggregate)
    try:
        spec.decode_command(type_, payload)
    except UnknownTypeError as exc:
        raise NotFound(exc.message, code="unknown_command_type",
                       details={"type": type_, "known": sorted(spec.commands)}) from exc
    except CommandError as exc:
        raise BadRequest(exc.message, code=exc.code, details=exc.details) from exc
    except Exception as exc:  # a codec surprise is still the client's bad input, never a 500
        log.warning("payload check raised", aggregate=aggregate, type=type_, error=repr(exc))
        raise BadRequest(f"invalid payload: {exc}", code="invalid_payload") from exc
    return CommandEnvelope(CommandId(command_id), AggregateId(aggregate_id), type_, payload, expected)


def new_command_id() -> str:
    """128 random bits as 32 hex digits, like ``uuid4().hex``, from ``random``'s generator (seeded from
    ``os.urandom`` per process and reseeded after fork): ``os.urandom`` per command showed in profiles
    under load, and command ids need to be unique, not secret."""
    return f"{random.getrandbits(128):032x}"


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
    pending = {"command_id": envelope.command_id, "aggregate": aggregate, "aggregate_id": envelope.aggregate_id,
               "status": "pending", "location": where}
    if not wait:
        try:
            async with asyncio.timeout(timeout):
                await gateway.producer.send(topic, envelope.aggregate_id, envelope.to_bytes())
        except TimeoutError:
            raise GatewayTimeout(f"Kafka did not acknowledge the command within {timeout}s",
                                 details=pending, headers={"Location": where}) from None
        return JSONResponse(pending, status_code=202, headers={"Location": where})
    future = gateway.hub.waiter(aggregate, envelope.command_id)  # before producing: the result may be quick
    try:
        async with asyncio.timeout(timeout):
            gateway.producer.send_nowait(topic, envelope.aggregate_id, envelope.to_bytes(), future)
            result = await future
    except TimeoutError:
        raise GatewayTimeout(
            f"no result within {timeout}s; the command may still be handled: GET {where} later",
            details=pending, headers={"Location": where}) from None
    finally:
        gateway.hub.forget(aggregate, envelope.command_id, future)
    return JSONResponse(result, status_code=RESULT_STATUS[result["status"]], headers={"Location": where})


async def get_command(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    aggregate = request.path_params["aggregate"]
    command_id = request.path_params["command_id"]
    gateway.spec(aggregate)
    result = gateway.hub.get(aggregate, command_id)
    if result is None:
        raise NotFound(f"no result for command {command_id!r} of {aggregate} (yet): it is unknown, still "
                       "pending, or older than this replica's index", code="unknown_command",
                       details={"command_id": command_id})
    return JSONResponse(result)
