"""The wire formats: every record foldline reads or writes, as JSON, keyed by the aggregate id.

``docs/records.md`` describes the same formats for clients in other languages; keep the two in step.
Every value carries a ``schema_version`` so an upcaster can read old records.
"""

from __future__ import annotations

import base64
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from foldline.errors import DecodeError
from foldline.ids import AggregateId, CommandId

FORMAT_VERSION = 1


class Status(StrEnum):
    """What became of a command: the only place these words are spelled."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    CONFLICT = "conflict"
    FAILED = "failed"


STATUSES: tuple[Status, ...] = tuple(Status)

#: The fields a sender may set in a command envelope; the rest (schema_version, issued_at) are foldline's.
ENVELOPE_FIELDS = frozenset({"aggregate_id", "type", "payload", "expected_version", "command_id"})
#: What a submitted command id may look like (ids read back from Kafka are only required to be non-empty).
COMMAND_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_AGGREGATE_ID = 256
#: The longest command id a record read from Kafka may carry (results and snapshots echo it).
MAX_RECORD_ID = 256
_SURROGATE = re.compile("[\ud800-\udfff]")

# orjson: several times faster than the stdlib on the per-command path, and byte-for-byte compact JSON.
_dumps = orjson.dumps
_loads = orjson.loads


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dumps(value: Any) -> bytes:
    return _dumps(value)


def loads(raw: bytes | str | None, what: str) -> dict[str, Any]:
    """Parse one JSON object or raise DecodeError saying what was expected."""
    if raw is None:
        raise DecodeError(f"{what} has no value (a tombstone or an empty record)")
    try:
        data = _loads(raw)
    except (UnicodeDecodeError, ValueError, TypeError) as exc:
        raise DecodeError(f"{what} is not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DecodeError(f"{what} must be a JSON object, got {type(data).__name__}")
    return data


def schema_version_of(data: dict[str, Any], what: str) -> int:
    """A record's ``schema_version``: a positive integer, 1 when absent (never ``int()`` of anything)."""
    value = data.get("schema_version", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DecodeError(f"{what} needs schema_version as a positive integer, got {value!r}")
    return value


def scrub(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD, so that UTF-8 can encode it."""
    return _SURROGATE.sub("\ufffd", text)


def clip(text: str, limit: int) -> str:
    """At most ``limit`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(str(k)): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed(v) for v in value]
    return value


def dumps_text_safe(value: Any) -> bytes:
    """``dumps``, with lone surrogates replaced when the value holds any (they have no UTF-8 form)."""
    try:
        return _dumps(value)
    except orjson.JSONEncodeError:
        return _dumps(_scrubbed(value))


def _field(data: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise DecodeError(f"{what} needs {name!r} as {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class CommandEnvelope:
    """A command as sent to ``<agg>.commands`` (key: the aggregate id)."""

    command_id: CommandId
    aggregate_id: AggregateId
    type: str
    payload: dict[str, Any]
    expected_version: int | None = None
    schema_version: int = 1
    issued_at: str = field(default_factory=now_iso)

    def to_bytes(self) -> bytes:
        return dumps(
            {
                "command_id": self.command_id,
                "aggregate_id": self.aggregate_id,
                "type": self.type,
                "schema_version": self.schema_version,
                "expected_version": self.expected_version,
                "payload": self.payload,
                "issued_at": self.issued_at,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> CommandEnvelope:
        """A command record read from ``<agg>.commands`` (any producer's: only the shape is checked)."""
        return cls.from_json(loads(raw, "command envelope"))

    @classmethod
    def from_json(cls, data: Any, *, submitted: bool = False) -> CommandEnvelope:
        """The one parse of a command envelope; raises ``DecodeError`` saying what is wrong.

        ``submitted=True`` is for a command entering the system (the gateway): only the fields a sender
        may set, an id of the ``COMMAND_ID`` form (a new one when absent), a bounded aggregate id.
        """
        what = "command envelope"
        if not isinstance(data, dict):
            raise DecodeError(f"the {what} must be a JSON object, got {type(data).__name__}")
        if submitted:
            unknown = data.keys() - ENVELOPE_FIELDS
            if unknown:
                raise DecodeError(
                    f"unknown field(s) {', '.join(sorted(unknown))}; expected some of "
                    f"{', '.join(sorted(ENVELOPE_FIELDS))}"
                )
        expected = data.get("expected_version")
        if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int) or expected < 0):
            raise DecodeError(f"expected_version must be null or a non-negative integer, got {expected!r}")
        aggregate_id = data.get("aggregate_id")
        if (
            not isinstance(aggregate_id, str)
            or not aggregate_id
            or (submitted and (not aggregate_id.strip() or len(aggregate_id) > MAX_AGGREGATE_ID))
        ):
            raise DecodeError(f"aggregate_id must be a non-empty string of at most {MAX_AGGREGATE_ID} characters")
        type_ = data.get("type")
        if not isinstance(type_, str) or (submitted and not type_):
            raise DecodeError("type must be the name of a command, such as CreateInvoice")
        payload = data.get("payload")
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise DecodeError(f"payload must be a JSON object, got {type(payload).__name__}")
        command_id = data.get("command_id")
        if submitted and command_id is None:
            command_id = new_command_id()
        elif (
            not isinstance(command_id, str)
            or not command_id
            or len(command_id) > MAX_RECORD_ID
            or (submitted and not COMMAND_ID.match(command_id))
        ):
            raise DecodeError(
                "command_id must be 1-128 characters of letters, digits and . _ : - (starting with a letter or digit)"
            )
        if submitted:
            return cls(CommandId(command_id), AggregateId(aggregate_id), type_, payload, expected)
        return cls(
            CommandId(command_id),
            AggregateId(aggregate_id),
            type_,
            payload,
            expected,
            schema_version=schema_version_of(data, what),
            issued_at=str(data.get("issued_at", "")),
        )


def new_command_id() -> str:
    """128 random bits as 32 hex digits, like ``uuid4().hex``, from ``random``'s generator (seeded from
    ``os.urandom`` per process and reseeded after fork): ``os.urandom`` per command showed in profiles
    under load, and command ids need to be unique, not secret."""
    return f"{random.getrandbits(128):032x}"


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What became of one command, on ``<agg>.command-results`` (key: the aggregate id).

    ``version`` is the aggregate's version after the command (unchanged unless accepted).
    ``code`` is a stable word for a failure: ``undecodable``, ``unknown_type``, ``invalid_payload``,
    ``conflict``, ``rejected`` or ``decide_failed``. A snapshot's ``recent`` list keeps results in
    their ``compact`` form (no nulls, no aggregate id: the snapshot's key says it).
    """

    command_id: CommandId
    aggregate_id: AggregateId
    status: Status
    version: int
    events: tuple[str, ...] = ()
    reason: str | None = None
    code: str | None = None
    duplicate: bool = False
    recorded_at: str = field(default_factory=now_iso)

    def to_json(self) -> dict[str, Any]:
        return {
            "command_id": self.command_id,
            "aggregate_id": self.aggregate_id,
            "status": self.status,
            "version": self.version,
            "events": list(self.events),
            "reason": self.reason,
            "code": self.code,
            "duplicate": self.duplicate,
            "recorded_at": self.recorded_at,
            "schema_version": FORMAT_VERSION,
        }

    def to_bytes(self) -> bytes:
        """Always encodable: a lone surrogate salvaged from a broken record becomes U+FFFD."""
        return dumps_text_safe(self.to_json())

    def compact(self) -> dict[str, Any]:
        """The form a snapshot's ``recent`` list keeps, for deduplication."""
        item: dict[str, Any] = {
            "command_id": self.command_id,
            "status": self.status,
            "version": self.version,
            "recorded_at": self.recorded_at,
        }
        if self.events:
            item["events"] = list(self.events)
        if self.reason is not None:
            item["reason"] = self.reason
        if self.code is not None:
            item["code"] = self.code
        return item

    @classmethod
    def from_compact(cls, item: dict[str, Any], aggregate_id: str) -> CommandResult:
        """A result kept in a snapshot's ``recent`` list, handed out again: marked as a duplicate."""
        return cls.from_json({**item, "aggregate_id": aggregate_id, "duplicate": True})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CommandResult:
        what = "command result"
        try:
            status = Status(str(data.get("status")))
        except ValueError:
            raise DecodeError(f"{what} has an unknown status {data.get('status')!r}") from None
        return cls(
            command_id=CommandId(_field(data, "command_id", str, what)),
            aggregate_id=AggregateId(str(data.get("aggregate_id", ""))),
            status=status,
            version=_field(data, "version", int, what),
            events=tuple(data.get("events") or ()),
            reason=data.get("reason"),
            code=data.get("code"),
            duplicate=bool(data.get("duplicate", False)),
            recorded_at=str(data.get("recorded_at", "")),
        )

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> CommandResult:
        return cls.from_json(loads(raw, "command result"))


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One event on ``<agg>.events`` (key: the aggregate id); ``version`` counts events from 1."""

    aggregate_id: AggregateId
    type: str
    version: int
    payload: dict[str, Any]
    command_id: CommandId
    schema_version: int = 1
    recorded_at: str = field(default_factory=now_iso)

    def to_bytes(self) -> bytes:
        return dumps(
            {
                "aggregate_id": self.aggregate_id,
                "type": self.type,
                "schema_version": self.schema_version,
                "version": self.version,
                "command_id": self.command_id,
                "recorded_at": self.recorded_at,
                "payload": self.payload,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> EventRecord:
        what = "event"
        data = loads(raw, what)
        return cls(
            aggregate_id=AggregateId(_field(data, "aggregate_id", str, what)),
            type=_field(data, "type", str, what),
            version=_field(data, "version", int, what),
            payload=_field(data, "payload", dict, what),
            command_id=CommandId(str(data.get("command_id", ""))),
            schema_version=schema_version_of(data, what),
            recorded_at=str(data.get("recorded_at", "")),
        )


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """The latest state of one aggregate on ``<agg>.snapshots`` (compacted; key: the aggregate id).

    ``recent`` holds the results of the aggregate's last commands (newest last, each in
    ``CommandResult.compact`` form), which is how a
    resubmitted command id gets its first result again even after the partition moved to another pod.
    A snapshot at version 0 records only such results for an aggregate that does not exist yet.
    """

    aggregate_id: AggregateId
    version: int
    state: Any
    schema_version: int = 1
    recent: tuple[dict[str, Any], ...] = ()
    updated_at: str = field(default_factory=now_iso)

    def to_bytes(self) -> bytes:
        return dumps(
            {
                "aggregate_id": self.aggregate_id,
                "version": self.version,
                "schema_version": self.schema_version,
                "updated_at": self.updated_at,
                "state": self.state,
                "recent": list(self.recent),
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> SnapshotRecord:
        what = "snapshot"
        data = loads(raw, what)
        return cls(
            aggregate_id=AggregateId(_field(data, "aggregate_id", str, what)),
            version=_field(data, "version", int, what),
            state=data.get("state"),
            schema_version=schema_version_of(data, what),
            recent=tuple(data.get("recent") or ()),
            updated_at=str(data.get("updated_at", "")),
        )


#: At most this many characters of an error message go into a dead letter.
MAX_MESSAGE = 2000


def _as_text(raw: bytes) -> tuple[str, str]:
    try:
        return raw.decode(), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode(), "base64"


def dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    code: str,
    message: str,
    max_bytes: int | None = None,
) -> bytes:
    """A record for ``<agg>.dead-letters``: the original bytes, where they came from, and why.

    Key and value are kept as text when they are UTF-8, else as base64 (``key_encoding``,
    ``value_encoding``), so no byte is lost. With ``max_bytes`` the record is cut to fit: the value (then
    the key) keeps only its first bytes, ``truncated`` is true and ``key_bytes``/``value_bytes`` give the
    original lengths.
    """
    key_cut, value_cut = key, value
    while True:
        letter = _letter(topic, partition, offset, key, value, key_cut, value_cut, code, message)
        if max_bytes is None or len(letter) <= max_bytes:
            return letter
        # Base64 and JSON escapes make the output longer than the input: shrink in proportion.
        if value_cut:
            value_cut = value_cut[: _shrunk(len(value_cut), len(letter), max_bytes)]
        elif key_cut:
            key_cut = key_cut[: _shrunk(len(key_cut), len(letter), max_bytes)]
        else:
            return letter  # only the source and error are left: as small as it gets


def _shrunk(length: int, size: int, max_bytes: int) -> int:
    """A shorter length for a part of ``length`` bytes, so that a record of ``size`` bytes fits."""
    return min(length - 1, int(length * max(0, max_bytes - 1024) / size))


def _letter(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    key_cut: bytes | None,
    value_cut: bytes | None,
    code: str,
    message: str,
) -> bytes:
    key_text, key_encoding = _as_text(_whole_chars(key_cut, key)) if key_cut is not None else (None, None)
    text, encoding = _as_text(_whole_chars(value_cut, value)) if value_cut is not None else (None, "utf-8")
    return dumps_text_safe(
        {
            "source": {"topic": topic, "partition": partition, "offset": offset},
            "key": key_text,
            "key_encoding": key_encoding,
            "key_bytes": None if key is None else len(key),
            "value": text,
            "value_encoding": encoding,
            "value_bytes": None if value is None else len(value),
            "truncated": key_cut != key or value_cut != value,
            "error": {"code": code, "message": clip(message, MAX_MESSAGE)},
            "recorded_at": now_iso(),
            "schema_version": FORMAT_VERSION,
        }
    )


def _whole_chars(raw: bytes, whole: bytes | None) -> bytes:
    """A prefix cut inside a UTF-8 character would turn valid text into base64: drop the partial tail."""
    if raw == whole:
        return raw
    for back in range(1, min(4, len(raw)) + 1):
        byte = raw[-back]
        if byte < 0x80:
            return raw  # ASCII: the cut was between characters
        if byte >= 0xC0:  # the lead byte of the last character: is that character complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return raw if need <= back else raw[:-back]
    return raw
