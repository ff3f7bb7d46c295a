"""The poison suite: bad records straight onto ``<agg>.commands`` with Debian's ``kcat`` (a client foldline
did not write), against a running ``foldline command-handler`` process and the real broker.

Each record gets its documented outcome (docs/reliability.md, "Command handler: bad input"): a failed
result with its code when a command id can be recovered, always a dead letter with the cause, read back
read_committed; a valid command sent after it on the same partition is answered; the process is alive at
the end. The ~4,300-line invoice (a snapshot past 1 MB, from valid commands) is refused once its snapshot
would pass FOLDLINE_MAX_RECORD_BYTES, and nothing larger is ever written.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from foldline.partitioner import partition_for
from foldline.records import CommandResult, SnapshotRecord
from foldline.settings import HandlerSettings
from foldline.topics import TopicNames
from tests.conftest import aggregate_path
from tests.kafka_support import HandlerProcess, read_topic, start_handler, wait_for_results

pytestmark = pytest.mark.kafka

PARTITIONS = 3
CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}
LIMIT = HandlerSettings.max_record_bytes
#: Idempotent, so that a retried request cannot reorder a stream of records (a create behind its line items).
KCAT = ["kcat", "-P", "-X", "enable.idempotence=true"]


def key_on(partition: int, prefix: str) -> str:
    """A key whose murmur2 partition is ``partition``."""
    return next(k for k in (f"{prefix}-{n}" for n in range(1000)) if partition_for(k, PARTITIONS) == partition)


def kcat(bootstrap: str, topic: str, partition: int, key: bytes | None, value: bytes | None, tmp: Path) -> None:
    """One record with kcat: the value from a file (one file, one message). kcat skips an empty file, so an
    empty or null value goes as a ``key<TAB>`` line (``-K``), null with ``-Z``."""
    args: list[str | bytes] = [*KCAT, "-b", bootstrap, "-t", topic, "-p", str(partition)]
    if not value:
        assert key is not None and b"\t" not in key and b"\n" not in key
        flags = ["-K", "\t", *(["-Z"] if value is None else [])]
        subprocess.run([*args, *flags], input=key + b"\t\n", check=True, timeout=60, capture_output=True)
        return
    path = tmp / "value"
    path.write_bytes(value)
    if key is not None:
        args += ["-k", key]
    subprocess.run([*args, str(path)], check=True, timeout=60, capture_output=True)


def envelope(command_id: str, aggregate_id: str, **fields: object) -> bytes:
    return json.dumps(
        {"command_id": command_id, "aggregate_id": aggregate_id, "type": "CreateInvoice", "payload": CREATE, **fields}
    ).encode()


@dataclass
class Case:
    name: str
    key: bytes | None
    value: bytes | None
    code: str
    command_id: str | None  # the failed result's, or None when no id can be recovered
    partition: int | None = None  # the key's own partition unless set


def cases() -> list[Case]:
    k = key_on(0, "p")  # every case with a usable key sits on partition 0
    deep = b'{"command_id":"c-deep","aggregate_id":"' + k.encode() + b'","type":"CreateInvoice","payload":'
    deep += b"[" * 10_000 + b"]" * 10_000 + b"}"
    invalid_utf8 = envelope("c-utf8", k, payload={**CREATE, "customer": "caf@"}).replace(b"caf@", b"caf\xe9")
    quotes = envelope("c-quotes", k, payload={**CREATE, "customer": '"' * 440_000})  # ~880 KB of \"
    wrong = key_on(1, "w")
    return [
        Case("schema_version x", k.encode(), envelope("c-sv-x", k, schema_version="x"), "undecodable", "c-sv-x"),
        Case(
            "schema_version null", k.encode(), envelope("c-sv-null", k, schema_version=None), "undecodable", "c-sv-null"
        ),
        Case(
            "schema_version 1.5", k.encode(), envelope("c-sv-float", k, schema_version=1.5), "undecodable", "c-sv-float"
        ),
        Case(
            "schema_version 99", k.encode(), envelope("c-sv-99", k, schema_version=99), "unsupported_version", "c-sv-99"
        ),
        Case(
            "lone surrogate id",
            k.encode(),
            b'{"command_id":"\\ud800","aggregate_id":"' + k.encode() + b'","type":"CreateInvoice","payload":{}}',
            "undecodable",
            "\ufffd",
        ),
        Case(
            "lone surrogate in a field",
            k.encode(),
            envelope("c-sur-field", k, payload={**CREATE, "customer": "@"}).replace(b"@", b"\\udc00"),
            "undecodable",
            "c-sur-field",
        ),
        Case("nested 10,000 deep", k.encode(), deep, "undecodable", "c-deep"),
        Case("invalid UTF-8, ASCII id", k.encode(), invalid_utf8, "undecodable", "c-utf8"),
        Case("garbage", k.encode(), bytes(range(256)) * 8, "undecodable", None),
        Case("empty value", k.encode(), b"", "undecodable", None),
        Case("null value", k.encode(), None, "undecodable", None),
        Case("900 KB garbage", k.encode(), b"\x00\xff garbage " * 90_000, "undecodable", None),
        Case("880 KB escaped quotes", k.encode(), quotes, "invalid_payload", "c-quotes"),
        Case(
            "NUL in text",
            k.encode(),
            envelope("c-nul", k, payload={**CREATE, "customer": "A\x00B"}),
            "invalid_payload",
            "c-nul",
        ),
        Case("null key", None, envelope("c-nokey", k), "invalid_key", "c-nokey", partition=0),
        Case("wrong key", k.encode(), envelope("c-wrongkey", key_on(0, "other")), "invalid_key", "c-wrongkey"),
        Case(
            "wrong partition", wrong.encode(), envelope("c-wrongp", wrong), "wrong_partition", "c-wrongp", partition=0
        ),
        Case("non-UTF-8 key", b"\xff\xfe-" + k.encode(), b"not json", "undecodable", None),
    ]


@pytest.fixture
def handler(kafka_bootstrap, invoices_aggregate, tmp_path) -> Iterator[tuple[type, HandlerProcess]]:
    assert shutil.which("kcat"), "kcat is missing: apt-get install -y kcat (scripts/bootstrap.sh installs it)"
    cls = invoices_aggregate(partitions=PARTITIONS)
    proc = start_handler(
        kafka_bootstrap,
        aggregate_path(cls),
        tmp_path / "state",
        "poison",
        tmp_path,
        extra_env={"FOLDLINE_COMMIT_INTERVAL_MS": "20"},
    )
    yield cls, proc
    if proc.alive():
        proc.terminate()


def test_every_poison_record_gets_its_outcome_and_the_partition_goes_on(kafka_bootstrap, handler, tmp_path):
    cls, proc = handler
    names = TopicNames(cls.name)
    follow_ups: dict[str, int] = {}
    for n, case in enumerate(cases()):
        partition = case.partition if case.partition is not None else partition_for(case.key or b"", PARTITIONS)
        kcat(kafka_bootstrap, names.commands, partition, case.key, case.value, tmp_path)
        ok = key_on(partition, f"ok{n}")  # then a valid command on the same partition
        kcat(kafka_bootstrap, names.commands, partition, ok.encode(), envelope(f"ok-{n}", ok), tmp_path)
        follow_ups[f"ok-{n}"] = partition
    expected = [c for c in cases() if c.command_id is not None]
    got = {str(r.command_id): r for r in wait_for_results(kafka_bootstrap, cls.name, len(follow_ups) + len(expected))}
    assert proc.alive(), proc.log.read_text()[-3000:]
    for command_id in follow_ups:
        assert got[command_id].status == "accepted", command_id
    for case in expected:
        result = got[case.command_id]  # type: ignore[index]
        assert (result.status, result.code) == ("failed", case.code), case.name
        assert result.reason and len(result.to_bytes()) < 10_000, case.name

    # A dead letter for every case, with its cause, found by the offset kcat's record got.
    commands = read_topic(kafka_bootstrap, names.commands)
    letters = {
        (d["source"]["partition"], d["source"]["offset"]): d
        for d in (json.loads(m.value()) for m in read_topic(kafka_bootstrap, names.dead_letters))
    }
    assert len(letters) == len(cases())
    for case in cases():
        sent = next(m for m in commands if m.key() == case.key and m.value() == case.value)
        letter = letters[(sent.partition(), sent.offset())]
        assert letter["error"]["code"] == case.code and letter["error"]["message"], case.name
        if case.key is None:
            assert letter["key"] is None
        elif letter["key_encoding"] == "base64":
            assert base64.b64decode(letter["key"]) == case.key
        else:
            assert letter["key"].encode() == case.key
        value = case.value
        if value is None:
            assert letter["value"] is None and sent.value() is None, case.name
        elif letter["truncated"]:
            assert letter["value_bytes"] == len(value) and len(value) > 500_000, case.name
        else:
            decoded = (
                letter["value"].encode() if letter["value_encoding"] == "utf-8" else base64.b64decode(letter["value"])
            )
            assert decoded == value, case.name
    for m in read_topic(kafka_bootstrap, names.dead_letters):
        assert len(m.value()) <= LIMIT
    wrong = next(c for c in cases() if c.name == "wrong partition")
    events = read_topic(kafka_bootstrap, names.events)
    assert not [m for m in events if m.key() == wrong.key]  # no second history on partition 0
    assert proc.alive() and proc.terminate() == 0


def test_an_invoice_past_the_record_size_limit_is_refused_not_written(kafka_bootstrap, handler, tmp_path):
    """~4,300 valid AddLineItem commands (a snapshot of over 1 MB if all were taken), in one kcat stream."""
    cls, proc = handler
    names = TopicNames(cls.name)
    key = key_on(2, "big")
    partition = partition_for(key, PARTITIONS)
    lines = [envelope("create", key).decode()]
    for n in range(4300):
        line = {"line_id": f"l{n}", "description": f"{n} " + "x" * 190, "quantity": 1, "unit_price": "1.00"}
        lines.append(
            json.dumps({"command_id": f"add-{n}", "aggregate_id": key, "type": "AddLineItem", "payload": line})
        )
    after = key_on(partition, "after")
    lines.append(envelope("after", after).decode())
    subprocess.run(
        [*KCAT, "-b", kafka_bootstrap, "-t", names.commands, "-p", str(partition), "-k", key],
        input="\n".join(lines[:-1]).encode(),
        check=True,
        timeout=120,
    )
    subprocess.run(
        [*KCAT, "-b", kafka_bootstrap, "-t", names.commands, "-p", str(partition), "-k", after],
        input=lines[-1].encode(),
        check=True,
        timeout=60,
    )
    got: dict[str, CommandResult] = {
        str(r.command_id): r for r in wait_for_results(kafka_bootstrap, cls.name, 4302, 600)
    }
    assert proc.alive(), proc.log.read_text()[-3000:]
    assert got["after"].status == "accepted" and got["create"].status == "accepted"
    outcomes = [(str(got[f"add-{n}"].status), got[f"add-{n}"].code) for n in range(4300)]
    accepted = outcomes.count(("accepted", None))
    assert outcomes == [("accepted", None)] * accepted + [("failed", "too_large")] * (4300 - accepted)
    assert 2500 < accepted < 4300
    refused = got["add-4299"]
    assert refused.version == accepted + 1 and "FOLDLINE_MAX_RECORD_BYTES" in (refused.reason or "")
    events = [m for m in read_topic(kafka_bootstrap, names.events) if m.key() == key.encode()]
    assert len(events) == accepted + 1  # nothing written for a refused command
    snapshots = [m for m in read_topic(kafka_bootstrap, names.snapshots) if m.key() == key.encode()]
    assert max(len(m.value()) for m in snapshots) <= LIMIT
    last = SnapshotRecord.from_bytes(snapshots[-1].value())
    assert last.version == accepted + 1 and len(last.state["lines"]) == accepted
    assert proc.alive() and proc.terminate() == 0


def test_a_dead_letter_the_producer_refuses_for_its_size_is_dropped_not_fatal(
    kafka_bootstrap, invoices_aggregate, tmp_path
):
    """Should the producer still refuse a dead letter (MSG_SIZE_TOO_LARGE: here a producer whose
    message.max.bytes is below FOLDLINE_MAX_RECORD_BYTES), the handler drops it and goes on."""
    import threading
    import uuid

    from confluent_kafka import Producer

    from foldline.aggregate import AggregateSpec
    from foldline.clients import transactional_producer_config
    from foldline.handler.wiring import build_command_handler
    from foldline.settings import KafkaSettings
    from tests.kafka_support import command, send

    cls = invoices_aggregate(partitions=1)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    settings = HandlerSettings(
        kafka=kafka, state_dir=tmp_path / "state", instance_id=uuid.uuid4().hex[:8], max_record_bytes=65_536
    )
    handler = build_command_handler(AggregateSpec(cls()), settings)
    tid = f"foldline.{cls.name}.{settings.instance_id}-small"
    # One producer in place of the handler's own (HandlerSettings.txn_producers of them).
    handler.producers = [Producer({**transactional_producer_config(kafka, tid), "message.max.bytes": 20_000})]
    handler.producer = handler.producers[0]
    names = TopicNames(cls.name)
    ok = command("inv-after", "CreateInvoice", CREATE)
    send(kafka_bootstrap, names.commands, [(b"inv-big", b"\x00garbage" * 5_000), ok])  # a ~60 KB dead letter
    thread = threading.Thread(target=handler.run, daemon=True)
    thread.start()
    try:
        got = {r.command_id: r for r in wait_for_results(kafka_bootstrap, cls.name, 1)}
        assert got[ok.command_id].status == "accepted" and thread.is_alive()
        assert read_topic(kafka_bootstrap, names.dead_letters) == []  # dropped, not written
    finally:
        handler.stop()
        thread.join(60)
