"""Bad input to the command handler, without Kafka: what the partition task makes of each poison record
(a failed result when a command id can be recovered, always a dead letter with the cause, records that
always encode and fit the size limit) and that the next valid command is still answered."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import pytest

from foldline import (
    Aggregate,
    AggregateId,
    AggregateSpec,
    CommandEnvelope,
    CommandId,
    CommandResult,
    HandlerSettings,
    SnapshotRecord,
)
from foldline.errors import AggregateDefinitionError, DecodeError
from foldline.examples.invoices import Invoices
from foldline.handler.intake import MAX_KEY_BYTES, Refusal, read_command, salvage_command_id
from foldline.handler.task import PartitionTask
from foldline.partitioner import partition_for
from foldline.records import EventRecord, dead_letter
from foldline.store.base import open_state_store

CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}
PARTITIONS = 3
KEY = b"inv-1"
HOME = partition_for(KEY, PARTITIONS)


def command(command_id: str, aggregate_id: str, type_: str, payload: dict[str, Any]) -> bytes:
    return CommandEnvelope(CommandId(command_id), AggregateId(aggregate_id), type_, payload).to_bytes()


def envelope(**fields: Any) -> bytes:
    base = {"command_id": "c-1", "aggregate_id": "inv-1", "type": "CreateInvoice", "payload": CREATE}
    return json.dumps({**base, **fields}).encode()


def task_for(tmp_path, aggregate: Aggregate[Any] | None = None, **changes: Any) -> PartitionTask:
    options: dict[str, Any] = {
        "cache_size": 100,
        "dedup_window": 4,
        "topic": "invoices.commands",
        "partitions": PARTITIONS,
        "clock": lambda: "2026-11-26T00:00:00Z",
        **changes,
    }
    store = open_state_store("sqlite", tmp_path / f"p{HOME}")
    return PartitionTask(AggregateSpec(aggregate or Invoices()), HOME, store, **options)


@pytest.fixture
def task(tmp_path):
    t = task_for(tmp_path)
    yield t
    t.close()


DEEP = b'{"command_id":"c-deep","aggregate_id":"inv-1","type":"CreateInvoice","payload":' + b"[" * 10_000
POISON = [
    # (record value, expected code, the command id a failed result carries, or None for no result)
    (envelope(schema_version="x"), "undecodable", "c-1"),
    (envelope(schema_version=None), "undecodable", "c-1"),
    (envelope(schema_version=1.5), "undecodable", "c-1"),
    (envelope(schema_version=0), "undecodable", "c-1"),
    (envelope(schema_version=99), "unsupported_version", "c-1"),
    (b'{"command_id":"\\ud800","aggregate_id":"inv-1","type":"CreateInvoice","payload":{}}', "undecodable", "\ufffd"),
    (DEEP + b"]" * 10_000 + b"}", "undecodable", "c-deep"),
    (DEEP, "undecodable", "c-deep"),  # unterminated as well: only the ASCII id is left to find
    (envelope(payload={"customer": "caf\udce9"}).replace(b"\\udce9", b"\xe9"), "undecodable", "c-1"),  # bad UTF-8
    (b'{"command_id": "c-1", \xff\xfe garbage', "undecodable", "c-1"),
    (bytes(range(256)) * 4, "undecodable", None),
    (b"", "undecodable", None),
    (None, "undecodable", None),
    (b"[1, 2]", "undecodable", None),
    (envelope(command_id="x" * 300), "undecodable", None),  # an id results cannot echo
    (envelope(payload={"customer": {"nested": [[[[[]]]]]}}), "invalid_payload", "c-1"),
    (envelope(type="Explode"), "unknown_type", "c-1"),
    (envelope(aggregate_id="inv-2"), "invalid_key", "c-1"),
]


@pytest.mark.parametrize(("value", "code", "command_id"), POISON)
def test_each_poison_record_fails_with_its_cause_and_the_partition_goes_on(task, value, code, command_id):
    out = task.handle(KEY, value, 7)
    if command_id is None:
        assert out.result is None
    else:
        assert out.result is not None and out.result.status == "failed" and out.result.code == code
        assert out.result.command_id == command_id and out.result.reason
        assert CommandResult.from_bytes(out.result.to_bytes()).command_id == command_id  # encodable
    assert out.dead_letter is not None and out.code == code and not out.events
    letter = json.loads(out.dead_letter)
    assert letter["error"]["code"] == code and letter["error"]["message"]
    assert letter["source"] == {"topic": "invoices.commands", "partition": HOME, "offset": 7}
    assert letter["key"] == "inv-1" and letter["truncated"] is False
    if value is not None:
        raw = value if letter["value_encoding"] == "utf-8" else None
        assert letter["value"] == (raw.decode() if raw is not None else base64.b64encode(value).decode())
    ok = task.handle(KEY, command("c-ok", "inv-1", "CreateInvoice", CREATE), 8)
    assert ok.result is not None and ok.result.status == "accepted" and ok.result.version == 1


def test_a_record_on_another_partition_than_its_keys_is_not_processed(task):
    other = next(k for k in (f"inv-{n}".encode() for n in range(100)) if partition_for(k, PARTITIONS) != HOME)
    value = command("c-w", other.decode(), "CreateInvoice", CREATE)
    out = task.handle(other, value, 3)
    assert out.result is not None and out.result.code == "wrong_partition" and not out.events
    assert f"belongs on partition {partition_for(other, PARTITIONS)}" in (out.result.reason or "")
    assert json.loads(out.dead_letter or b"")["error"]["code"] == "wrong_partition"
    assert task.snapshots() == []  # no aggregate touched: no second history on this partition


def test_null_and_oversized_keys_are_refused(task):
    out = task.handle(None, envelope(), 1)
    assert out.result is not None and out.result.code == "invalid_key" and out.key is None
    assert json.loads(out.dead_letter or b"")["key"] is None
    huge = b"k" * (MAX_KEY_BYTES + 1)
    out = task.handle(huge, envelope(aggregate_id=huge.decode()), 2)
    assert out.result is not None and out.result.code == "invalid_key" and out.key is None
    assert task.snapshots() == []


def test_dead_letters_keep_non_utf8_keys_and_fit_the_limit(tmp_path):
    task = task_for(tmp_path, partitions=None, max_record_bytes=100_000)
    key = b"\xff\xfe-not-utf8"
    out = task.handle(key, b"\x80" * 200_000, 5)
    letter = json.loads(out.dead_letter or b"")
    assert out.key == key  # the dead letter's record key is the raw key
    assert letter["key_encoding"] == "base64" and base64.b64decode(letter["key"]) == key
    assert len(out.dead_letter or b"") <= 100_000 and letter["truncated"] and letter["value_bytes"] == 200_000
    assert b"\x80" * 1000 in base64.b64decode(letter["value"])
    task.close()


@pytest.mark.parametrize(
    "value",
    [b"\x00garbage" * 100_000, b'"' + b'\\"' * 440_000 + b'"', envelope(payload={"customer": "\\" * 880_000})],
    ids=["900KB-garbage", "880KB-escaped-quotes", "880KB-backslashes"],
)
def test_huge_values_get_a_dead_letter_within_the_limit(task, value):
    out = task.handle(KEY, value, 9)
    assert out.dead_letter is not None and len(out.dead_letter) <= task.max_record_bytes
    letter = json.loads(out.dead_letter)
    assert letter["truncated"] and letter["value_bytes"] == len(value)
    assert value.startswith(letter["value"][:1000].encode())
    if out.result is not None:
        assert len(out.result.to_bytes()) < 10_000  # the reason quoted a prefix at most


def test_dead_letter_cuts_utf8_between_characters():
    letter = json.loads(
        dead_letter(
            topic="t",
            partition=0,
            offset=0,
            key=b"k",
            value="é".encode() * 100_000,
            code="c",
            message="m",
            max_bytes=70_000,
        )
    )
    assert letter["value_encoding"] == "utf-8" and set(letter["value"]) == {"é"} and letter["truncated"]


# -- size limit ---------------------------------------------------------------------------------------------
def test_a_command_that_would_grow_the_snapshot_past_the_limit_is_refused(tmp_path):
    task = task_for(tmp_path, max_record_bytes=65_536)
    task.handle(KEY, envelope(), 0)
    lines = 0
    while True:
        line = {"line_id": f"l{lines}", "description": "d" * 200, "quantity": 1, "unit_price": "1.00"}
        out = task.handle(KEY, envelope(command_id=f"a{lines}", type="AddLineItem", payload=line), lines + 1)
        assert out.result is not None
        if out.result.status != "accepted":
            break
        lines += 1
    assert out.result.code == "too_large" and "FOLDLINE_MAX_RECORD_BYTES" in (out.result.reason or "")
    assert out.result.version == lines + 1 and not out.events and 150 < lines < 300
    assert json.loads(out.dead_letter or b"")["error"]["code"] == "too_large"
    (_, raw), *_ = task.snapshots()
    snap = SnapshotRecord.from_bytes(raw)
    assert len(raw) <= 65_536 and snap.version == lines + 1 and len(snap.state["lines"]) == lines
    again = task.handle(KEY, envelope(command_id="send", type="SendInvoice", payload={}), 999)
    assert again.result is not None and again.result.status == "accepted"  # the aggregate goes on
    task.close()


@dataclass(frozen=True)
class Append:
    text: str


@dataclass(frozen=True)
class Appended:
    text: str


@dataclass(frozen=True)
class Notes:
    texts: tuple[str, ...] = ()


class NotesAggregate(Aggregate[Notes]):
    name = "notes"
    state_type = Notes
    commands = (Append,)
    events = (Appended,)

    def initial_state(self) -> Notes:
        return Notes()

    def decide(self, state: Notes, command: Any) -> Any:
        return [Appended(command.text)]

    def evolve(self, state: Notes, event: Any) -> Notes:
        return Notes((*state.texts, event.text))


def test_an_event_over_the_limit_is_refused(tmp_path):
    task = task_for(tmp_path, NotesAggregate(), partitions=None, max_record_bytes=65_536)
    small = command("n1", "n", "Append", {"text": "hello"})
    big = command("n2", "n", "Append", {"text": "x" * 70_000})
    assert task.handle(b"n", small, 0).result.status == "accepted"  # type: ignore[union-attr]
    out = task.handle(b"n", big, 1)
    assert out.result is not None and out.result.code == "too_large" and "an event" in (out.result.reason or "")
    assert out.result.version == 1 and task.load("n").state == Notes(("hello",))
    for _, raw in task.snapshots():
        assert len(raw) <= 65_536
    task.close()


def test_a_domain_that_raises_anything_fails_only_its_command(tmp_path):
    class Broken(NotesAggregate):
        def decide(self, state: Notes, command: Any) -> Any:
            raise RecursionError("deep")

    task = task_for(tmp_path, Broken(), partitions=None)
    out = task.handle(b"n", command("n1", "n", "Append", {"text": "a"}), 0)
    assert (
        out.result is not None and out.result.code == "decide_failed" and "RecursionError" in (out.result.reason or "")
    )
    task.close()


def test_max_record_bytes_setting():
    assert HandlerSettings.from_env({}).max_record_bytes == 900_000
    assert HandlerSettings.from_env({"FOLDLINE_MAX_RECORD_BYTES": "500000"}).max_record_bytes == 500_000


# -- decoding -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["x", None, 1.5, 0, -1, True, "1"])
def test_schema_version_must_be_a_positive_integer(bad):
    parsers: list[tuple[Any, dict[str, Any]]] = [
        (CommandEnvelope.from_bytes, json.loads(envelope())),
        (EventRecord.from_bytes, {"aggregate_id": "a", "type": "T", "version": 1, "payload": {}}),
        (SnapshotRecord.from_bytes, {"aggregate_id": "a", "version": 1, "state": {}}),
    ]
    for parse, data in parsers:
        assert parse(json.dumps(data).encode()).schema_version == 1  # absent: 1
        with pytest.raises(DecodeError, match="schema_version"):
            parse(json.dumps({**data, "schema_version": bad}).encode())


def test_salvage_finds_ids_in_broken_records():
    assert salvage_command_id(b'{"command_id": "abc", "payload": \xff}') == "abc"
    assert salvage_command_id(b'{"command_id":"a\\ud83d","x":1}') == "a\ufffd"
    assert salvage_command_id(b"[" * 5000 + b'{"command_id": "deep-1"}') == "deep-1"
    assert salvage_command_id(b'{"command_id": 12}') is None
    assert salvage_command_id(b"") is None and salvage_command_id(None) is None


def test_read_command_checks_the_key_before_the_value():
    got = read_command(None, b"garbage", partition=0, partitions=1)
    assert isinstance(got, Refusal) and got.code == "invalid_key"
    got = read_command(b"k", envelope(aggregate_id="k"), partition=0, partitions=1)
    assert isinstance(got, CommandEnvelope)


# -- command upcasting ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AppendV3:
    __foldline_type__ = "Append"
    __schema_version__ = 3
    text: str
    author: str


class UpcastingNotes(NotesAggregate):
    commands = (AppendV3,)  # type: ignore[assignment]
    command_upcasters = {("Append", 2): lambda p: {**p, "author": "unknown"}}

    def decide(self, state: Notes, command: Any) -> Any:
        return [Appended(f"{command.author}: {command.text}")]


@pytest.mark.parametrize(
    ("version", "outcome"),
    [(3, "accepted"), (2, "accepted"), (1, "unsupported_version"), (4, "unsupported_version")],
)
def test_commands_are_upcast_or_fail_unsupported_version(tmp_path, version, outcome):
    task = task_for(tmp_path, UpcastingNotes(), partitions=None)
    payload = {"text": "hi", "author": "ann"} if version == 3 else {"text": "hi"}
    value = json.dumps(
        {"command_id": "u", "aggregate_id": "n", "type": "Append", "schema_version": version, "payload": payload}
    ).encode()
    out = task.handle(b"n", value, 0)
    assert out.result is not None
    assert (out.result.code or out.result.status) == outcome
    if outcome == "accepted":
        assert task.load("n").state.texts == ((("ann" if version == 3 else "unknown") + ": hi"),)
    else:
        assert out.dead_letter is not None and str(version) in (out.result.reason or "")
    task.close()


def test_command_upcasters_must_name_an_older_version_of_a_declared_command():
    class Wrong(UpcastingNotes):
        command_upcasters = {("Append", 3): lambda p: p}

    with pytest.raises(AggregateDefinitionError, match="command upcaster"):
        AggregateSpec(Wrong())


def test_a_rejection_reason_with_a_lone_surrogate_still_encodes(tmp_path):
    class Odd(NotesAggregate):
        def decide(self, state: Notes, command: Any) -> Any:
            from foldline import Rejection

            return Rejection("no \ud800 thanks " + "x" * 2000)

    task = task_for(tmp_path, Odd(), partitions=None)
    out = task.handle(b"n", command("n1", "n", "Append", {"text": "a"}), 0)
    assert out.result is not None and out.result.status == "rejected"
    assert "\ufffd" in (out.result.reason or "") and len(out.result.reason or "") <= 500
    (_, raw), *_ = task.snapshots()  # the snapshot keeps the reason: it must encode
    assert SnapshotRecord.from_bytes(raw).recent[0]["reason"] == out.result.reason
    task.close()
