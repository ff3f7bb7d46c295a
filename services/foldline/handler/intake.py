"""Reading one record of ``<agg>.commands``: is it this partition's to handle, and is it a command at all?

Every way a record can be wrong ends as a ``Refusal``, never an exception: no key, a key longer than an
aggregate id may be, a key on another partition than its murmur2 partition (the documented placement:
a second partition would start a second history of the same aggregate), a key that differs from the
envelope's ``aggregate_id``, and any bytes that are not a command envelope. A refusal carries the command
id whenever one can be recovered, so that the sender still gets a failed result.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from foldline.errors import DecodeError
from foldline.partitioner import partition_for
from foldline.records import MAX_AGGREGATE_ID, MAX_RECORD_ID, CommandEnvelope, clip, scrub

#: The longest key a command record may have: an aggregate id of MAX_AGGREGATE_ID characters in UTF-8.
MAX_KEY_BYTES = 4 * MAX_AGGREGATE_ID
#: A command id in plain ASCII, found in bytes that do not parse (the gateway's form, longer allowed).
_ASCII_ID = re.compile(rb'"command_id"\s*:\s*"([A-Za-z0-9][A-Za-z0-9._:-]{0,%d})"' % (MAX_RECORD_ID - 1))


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a record is not processed; ``code`` is the result's and the dead letter's code."""

    code: str
    message: str
    command_id: str | None
    aggregate_id: str


def read_command(
    key: bytes | None, value: bytes | None, *, partition: int, partitions: int | None
) -> CommandEnvelope | Refusal:
    """The record's envelope, or why it is refused. ``partitions`` is the commands topic's partition
    count (None skips the placement check)."""
    data: Any = None
    problem: str | None = None
    if not value:
        problem = "the record has no value (a tombstone or an empty record)"
    else:
        try:
            data = orjson.loads(value)
        except (orjson.JSONDecodeError, ValueError, TypeError, RecursionError) as exc:
            problem = f"the value is not valid UTF-8 JSON: {exc}"
        else:
            if not isinstance(data, dict):
                problem = f"the value must be a JSON object (a command envelope), got {type(data).__name__}"
    placement = _key_problem(key, partition, partitions)
    if placement is not None:
        return _refuse(placement[0], placement[1], key, value, data)
    if problem is not None:
        return _refuse("undecodable", problem, key, value, data)
    try:
        envelope = CommandEnvelope.from_json(data)
    except DecodeError as exc:
        return _refuse("undecodable", exc.message, key, value, data)
    if envelope.aggregate_id.encode() != key:
        message = (
            f"the record key {key_text(key)!r} differs from aggregate_id {clip(envelope.aggregate_id, 80)!r}: "
            "the key must be the aggregate id"
        )
        return Refusal("invalid_key", message, envelope.command_id, clip(envelope.aggregate_id, MAX_AGGREGATE_ID))
    return envelope


def _key_problem(key: bytes | None, partition: int, partitions: int | None) -> tuple[str, str] | None:
    if key is None:
        return "invalid_key", "the record has no key: a command's key must be its aggregate id"
    if len(key) > MAX_KEY_BYTES:
        return "invalid_key", f"the record key has {len(key)} bytes; an aggregate id has at most {MAX_KEY_BYTES}"
    if partitions is not None:
        home = _home(key, partitions) if len(key) <= _CACHED_KEY_BYTES else partition_for(key, partitions)
        if home != partition:
            return (
                "wrong_partition",
                f"key {key_text(key)!r} belongs on partition {home} of {partitions} (murmur2, as Kafka's default "
                f"partitioner), not on partition {partition}: produce with the key and the default partitioner",
            )
    return None


#: A key's partition, remembered: murmur2 in Python is a loop per 4 bytes, and the aggregates a handler
#: sees again and again are its hot set. Only keys this short are kept, so the cache stays a few MB even
#: when every key is as long as allowed.
_home = lru_cache(maxsize=1 << 16)(partition_for)
_CACHED_KEY_BYTES = 64


def _refuse(code: str, message: str, key: bytes | None, value: bytes | None, data: Any) -> Refusal:
    return Refusal(code, message, salvage_command_id(value, data), _aggregate_text(key, data))


def key_text(key: bytes | None) -> str:
    """A key for messages and results: UTF-8 with replacements, at most 80 characters."""
    return "" if key is None else clip(key.decode(errors="replace"), 80)


def _aggregate_text(key: bytes | None, data: Any) -> str:
    if key is not None:
        return clip(key.decode(errors="replace"), MAX_AGGREGATE_ID)
    named = data.get("aggregate_id") if isinstance(data, dict) else None
    return clip(scrub(named), MAX_AGGREGATE_ID) if isinstance(named, str) else ""


def salvage_command_id(value: bytes | None, data: Any = None) -> str | None:
    """The command id of a record that is not a valid envelope, when one can be found: from the parsed
    object, else from the value read leniently (invalid UTF-8 replaced, any JSON the standard library
    takes), else a plain ASCII ``"command_id": "..."`` in whatever bytes there are. Lone surrogates become
    U+FFFD; an id longer than ``MAX_RECORD_ID`` characters is not one."""
    if not value:
        return None
    if not isinstance(data, dict):
        try:
            data = json.loads(value.decode(errors="replace"))
        except (ValueError, RecursionError):
            data = None
    if isinstance(data, dict) and "command_id" in data:
        found = data["command_id"]
        return scrub(found) if isinstance(found, str) and 0 < len(found) <= MAX_RECORD_ID else None
    match = _ASCII_ID.search(value)
    return match.group(1).decode() if match else None
