"""Dead letters of an aggregate: the newest records of ``<agg>.dead-letters``, decoded, with their cause.

GET /aggregates/{aggregate}/dead-letters?limit=N&aggregate_id=ID

Each request reads the topic ``read_committed`` with a consumer of its own, created, used and closed in
one worker thread (a confluent-kafka client is only ever called from the thread that owns it). The read
is bounded three ways: the newest ``limit`` records (per partition it starts ``2 * limit`` offsets before
the end and steps further back only while it has found fewer), a deadline
(``FOLDLINE_GATEWAY_DEAD_LETTERS_TIMEOUT_S``) and a budget of records scanned. What it could not reach in
time is said in the answer (``complete: false``), never waited for.

Decoding is defensive: the handler's format grows (raw keys, truncation markers), and the topic may hold
anything a client wrote. A record that is not a dead-letter object is shown raw (escaped text); fields
this code does not know are passed through as they are, and long values are clipped with a marker.
The projectors' skipped records (``foldline_skipped``, from the database) of the aggregate's topics
come along when the gateway has a database: the read side's dead letters.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from starlette.requests import Request
from starlette.responses import Response

from foldline.clients import dead_letter_reader_config
from foldline.consumer import take
from foldline.errors import BrokerUnavailableError, RetryableError
from foldline.gateway.core import Gateway
from foldline.gateway.errors import BadRequest, HttpError, NotFound, SafeJSON, Unavailable
from foldline.gateway.views import _int
from foldline.settings import KafkaSettings
from foldline.topics import TopicNames, private_group

log = structlog.get_logger("foldline.gateway.dead_letters")

#: The most dead letters one answer holds, and the default.
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
#: Records read per request at most (all partitions), whatever the filter: bounds time and memory.
SCAN_BUDGET = 20_000
#: Characters of one text value (a record's value, a message) kept before it is clipped.
MAX_TEXT = 8192
#: Items of one list or object kept before the rest are dropped (with a marker).
MAX_ITEMS = 64
#: Fields of a dead letter this code reads itself; any other field is shown under ``extra``.
KNOWN = frozenset(
    {
        "source",
        "key",
        "key_encoding",
        "key_bytes",
        "value",
        "value_encoding",
        "value_bytes",
        "truncated",
        "error",
        "recorded_at",
        "schema_version",
        "command_id",
    }
)


# -- decoding (pure) ---------------------------------------------------------------------------------------
def raw_text(data: bytes) -> str:
    """Bytes as text a person can read and JSON can carry: UTF-8, anything else escaped as ``\\xNN``."""
    return data.decode("utf-8", errors="backslashreplace")


def clip(value: Any, depth: int = 0) -> Any:
    """``value`` (from JSON) with long strings, long lists and deep nesting cut, each cut marked."""
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + f"… [{len(value) - MAX_TEXT} more characters]"
    if depth >= 8 and isinstance(value, (dict, list)):
        return clip(json.dumps(value, ensure_ascii=False)[: MAX_TEXT + 1])
    if isinstance(value, list):
        out = [clip(v, depth + 1) for v in value[:MAX_ITEMS]]
        return out + ([f"… [{len(value) - MAX_ITEMS} more items]"] if len(value) > MAX_ITEMS else [])
    if isinstance(value, dict):
        items = list(value.items())
        kept = {str(k)[:200]: clip(v, depth + 1) for k, v in items[:MAX_ITEMS]}
        if len(items) > MAX_ITEMS:
            kept["…"] = f"{len(items) - MAX_ITEMS} more fields"
        return kept
    return value


def _str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) else None


def _original(value: Any, encoding: Any) -> tuple[str | None, Any]:
    """The dead-lettered record's value as text, and (when it is a JSON object) that object."""
    if not isinstance(value, str):
        return None, None
    text = value
    if encoding == "base64":
        try:
            text = raw_text(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            return value, None  # not base64 after all: the text as it is
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return text, parsed if isinstance(parsed, dict) else None


def decode_dead_letter(value: bytes | None) -> dict[str, Any]:
    """What a dead-letter record says, as far as it can be read; never raises.

    ``decoded`` tells whether it was a dead-letter object at all; if not, ``problem`` says why and
    ``raw`` holds its bytes as escaped text."""
    if value is None:
        return {"decoded": False, "problem": "the record has no value", "raw": None}
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        return {"decoded": False, "problem": f"not JSON: {exc}"[:300], "raw": clip(raw_text(value))}
    if not isinstance(data, dict):
        return {
            "decoded": False,
            "problem": f"not a JSON object but {type(data).__name__}",
            "raw": clip(raw_text(value)),
        }
    error = data.get("error")
    cause: dict[str, Any] | None = None
    if isinstance(error, dict):
        cause = {"code": clip(error.get("code")), "message": clip(error.get("message"))}
        cause.update({str(k): clip(v) for k, v in error.items() if k not in ("code", "message")})
    elif error is not None:
        cause = {"code": None, "message": clip(error if isinstance(error, str) else json.dumps(error))}
    text, envelope = _original(data.get("value"), data.get("value_encoding"))
    command_id = _str(data, "command_id") or (_str(envelope, "command_id") if envelope else None)
    source = data.get("source")
    out: dict[str, Any] = {
        "decoded": True,
        "cause": cause,
        "command_id": clip(command_id),
        "source": clip(source) if isinstance(source, dict) else None,
        "key": clip(_original(data.get("key"), data.get("key_encoding"))[0]),
        "key_encoding": clip(data.get("key_encoding")),
        "value": clip(text),
        "value_encoding": clip(data.get("value_encoding")),
        "recorded_at": clip(data.get("recorded_at")),
        "schema_version": data.get("schema_version") if isinstance(data.get("schema_version"), int) else None,
    }
    if text is not None and len(text) > MAX_TEXT:
        out["value_length"] = len(text)
    # The handler's size facts: the original's lengths, and whether the dead letter kept only a prefix.
    for name in ("key_bytes", "value_bytes"):
        if isinstance(data.get(name), int):
            out[name] = data[name]
    if isinstance(data.get("truncated"), bool):
        out["truncated"] = data["truncated"]
    extra = {k: v for k, v in data.items() if k not in KNOWN}
    if extra:  # a newer handler's fields (raw keys, truncation markers, ...): shown as they are
        out["extra"] = clip(extra)
    if envelope is not None and isinstance(envelope.get("aggregate_id"), str):
        out["envelope_aggregate_id"] = clip(envelope["aggregate_id"])
    return out


def matches(entry: Mapping[str, Any], aggregate_id: str) -> bool:
    """Whether a decoded dead letter belongs to ``aggregate_id``: by record key, stored key or envelope."""
    return aggregate_id in (entry.get("record_key"), entry.get("key"), entry.get("envelope_aggregate_id"))


def _iso(ms: int) -> str | None:
    if ms <= 0:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _header(value: Any) -> str | None:
    if value is None:
        return None
    return clip(raw_text(value) if isinstance(value, bytes) else str(value))  # type: ignore[no-any-return]


def entry_of(msg: Message) -> dict[str, Any]:
    """One record of the topic as the API shows it: where it is, its headers, and what it says."""
    kind, ms = msg.timestamp()
    key = msg.key()
    found = msg.headers()
    headers: list[tuple[str, Any]] = list(found) if isinstance(found, list) else []
    entry: dict[str, Any] = {
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp": _iso(ms) if kind != 0 else None,
        "record_key": None if key is None else clip(raw_text(key)),
        "headers": [[clip(str(k)), _header(v)] for k, v in headers[:MAX_ITEMS]],
    }
    entry.update(decode_dead_letter(msg.value()))
    return entry


# -- reading the topic (one worker thread per request) ----------------------------------------------------
@dataclass
class Scan:
    """What one bounded read found: matching entries, and whether it saw all it had to."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    scanned: int = 0
    complete: bool = True
    partitions: int = 0


class TopicMissing(RetryableError):
    """The dead-letter topic does not exist (yet): a command handler creates it."""


def read_dead_letters(
    kafka: KafkaSettings, topic: str, *, limit: int, aggregate_id: str | None, timeout_s: float
) -> Scan:
    """The newest ``limit`` dead letters of ``topic`` (of ``aggregate_id`` if given), read within
    ``timeout_s``. Runs in a worker thread that alone owns the consumer it creates and closes."""
    deadline = time.monotonic() + timeout_s
    consumer = Consumer(dead_letter_reader_config(kafka, private_group("gateway-dead-letters")))
    try:
        return _scan(consumer, topic, limit, aggregate_id, deadline)
    finally:
        consumer.close()


def _left(deadline: float) -> float:
    return max(0.05, deadline - time.monotonic())


def _scan(consumer: Consumer, topic: str, limit: int, aggregate_id: str | None, deadline: float) -> Scan:
    try:
        meta = consumer.list_topics(topic, timeout=_left(deadline)).topics.get(topic)
    except KafkaException as exc:
        raise BrokerUnavailableError(f"cannot read metadata of {topic}: {exc}") from exc
    if meta is None or (meta.error is not None and meta.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
        raise TopicMissing(topic)
    if meta.error is not None or not meta.partitions:
        raise BrokerUnavailableError(f"topic {topic}: {meta.error}")
    scan = Scan(partitions=len(meta.partitions))
    bounds: dict[int, tuple[int, int]] = {}
    for p in sorted(meta.partitions):
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=_left(deadline), cached=False)
        except KafkaException as exc:
            raise BrokerUnavailableError(f"cannot read the offsets of {topic} [{p}]: {exc}") from exc
        bounds[p] = (low, high)
    found: dict[int, dict[int, dict[str, Any]]] = {p: {} for p in bounds}
    stop = {p: high for p, (_, high) in bounds.items()}  # read [start, stop) per partition
    window = max(2 * limit, 16)
    start = {p: max(low, high - window) for p, (low, high) in bounds.items()}
    pending = {p for p in bounds if start[p] < stop[p]}
    while pending:
        if time.monotonic() >= deadline or scan.scanned >= SCAN_BUDGET:
            scan.complete = False
            break
        _read_ranges(consumer, topic, {p: (start[p], stop[p]) for p in pending}, found, aggregate_id, scan, deadline)
        window *= 4
        again = set()
        for p in pending:
            low = bounds[p][0]
            if len(found[p]) < limit and start[p] > low:  # fewer than asked here: step further back
                stop[p], start[p] = start[p], max(low, start[p] - window)
                again.add(p)
        pending = again
    entries = [e for by_offset in found.values() for e in by_offset.values()]
    entries.sort(key=lambda e: (e["timestamp"] or "", e["partition"], e["offset"]), reverse=True)
    scan.entries = entries[:limit]
    return scan


def _read_ranges(
    consumer: Consumer,
    topic: str,
    ranges: Mapping[int, tuple[int, int]],
    found: dict[int, dict[int, dict[str, Any]]],
    aggregate_id: str | None,
    scan: Scan,
    deadline: float,
) -> None:
    """Read each partition's ``[start, stop)`` (transaction markers and aborted records are never seen:
    a partition is done at its first record at or past ``stop``, or at its end)."""
    consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in ranges.items()])
    open_ = set(ranges)
    try:
        while open_:
            if time.monotonic() >= deadline or scan.scanned >= SCAN_BUDGET:
                scan.complete = False
                return
            for msg in take(consumer, 500, min(0.2, _left(deadline))):
                p = int(msg.partition() or 0)
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        open_.discard(p)
                    elif error.fatal():
                        raise BrokerUnavailableError(f"dead-letter reader failed: {error.str()}")
                    continue
                if p not in open_:
                    continue
                offset = int(msg.offset() or 0)
                if offset >= ranges[p][1]:
                    open_.discard(p)
                    continue
                if scan.scanned >= SCAN_BUDGET:
                    scan.complete = False
                    return
                scan.scanned += 1
                entry = entry_of(msg)
                if aggregate_id is None or matches(entry, aggregate_id):
                    found[p][offset] = entry
    finally:
        consumer.unassign()


# -- the route ---------------------------------------------------------------------------------------------
async def dead_letters(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    spec = gateway.spec(request.path_params["aggregate"])
    params = request.query_params
    limit = _int(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    aggregate_id = params.get("aggregate_id") or None
    if aggregate_id is not None and "\x00" in aggregate_id:
        raise BadRequest("an aggregate id cannot hold a NUL character", code="invalid_query")
    names = TopicNames(spec.name)
    settings = gateway.settings
    try:
        async with asyncio.timeout(settings.dead_letters_timeout_s):
            await gateway.dead_letter_slots.acquire()
    except TimeoutError:
        raise Unavailable("too many dead-letter reads at once; retry") from None
    try:
        scan = await asyncio.to_thread(
            read_dead_letters,
            settings.kafka,
            names.dead_letters,
            limit=limit,
            aggregate_id=aggregate_id,
            timeout_s=settings.dead_letters_timeout_s,
        )
    except TopicMissing:
        raise NotFound(
            f"the topic {names.dead_letters} does not exist (yet): a command handler creates it",
            code="no_dead_letter_topic",
        ) from None
    except (BrokerUnavailableError, KafkaException) as exc:
        log.warning("dead letters unreadable", topic=names.dead_letters, error=str(exc))
        raise Unavailable("Kafka is unavailable; retry later") from exc
    finally:
        gateway.dead_letter_slots.release()
    body: dict[str, Any] = {
        "aggregate": spec.name,
        "aggregate_id": aggregate_id,
        "topic": names.dead_letters,
        "limit": limit,
        "dead_letters": scan.entries,
        "scanned": scan.scanned,
        "complete": scan.complete,
        "projector_skips": None,
    }
    if gateway.views is not None:
        try:
            body["projector_skips"] = await gateway.views.skipped(
                topics=[names.events, names.snapshots], aggregate_id=aggregate_id, limit=limit
            )
        except HttpError as exc:  # the database is away: the topic's part still answers
            body["projector_skips_error"] = exc.message
    return SafeJSON(body)
