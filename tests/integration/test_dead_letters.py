"""GET /aggregates/{agg}/dead-letters against the real broker and both databases: the handler's own dead
letters (an unknown command type carrying markup, bytes that are not JSON), records on the topic that are
not dead letters at all (shown raw, never a 5xx), a newer format's fields, the bearer token, the bounds,
and the journal projector's skipped records (``projector_skips``) from the database.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from confluent_kafka import Producer

from foldline.aggregate import AggregateSpec
from foldline.gateway import Gateway, GatewayServer
from foldline.gateway.views import ViewService
from foldline.projection import open_target
from foldline.projection.journal import journal_projection, journal_view
from foldline.projection.wiring import build_projector
from foldline.settings import GatewaySettings, KafkaSettings, ProjectorSettings
from foldline.topics import TopicNames

pytestmark = pytest.mark.kafka

TOKEN = "dead-letter-token"
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def dead_letter_stack(request, kafka_bootstrap, invoices_aggregate, run_handler, tmp_path):
    cls = invoices_aggregate(partitions=2)
    run_handler(cls(), commit_interval_ms=5)
    database = (
        request.getfixturevalue("postgres_url") if request.param == "postgres" else f"sqlite:///{tmp_path / 'v.db'}"
    )
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    projector = build_projector(
        journal_projection(cls), ProjectorSettings(kafka=kafka, database=database, batch_wait_ms=5)
    )
    thread = threading.Thread(target=projector.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not projector.ready():
        assert time.monotonic() < deadline, "the journal projector did not become ready"
        time.sleep(0.05)
    views = ViewService(database, {}, opener=open_target, journals={cls.name: journal_view(cls.name)})
    settings = GatewaySettings(kafka=kafka, host="127.0.0.1", token=TOKEN, dead_letters_timeout_s=10.0)
    with (
        GatewayServer(Gateway([AggregateSpec(cls())], settings, views)) as server,
        httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}) as client,
    ):
        yield cls.name, client, server
    projector.stop()
    thread.join(30)


def produce(bootstrap: str, records: list[tuple[str, bytes | None, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "partitioner": "murmur2_random"})
    for topic, key, value in records:
        producer.produce(topic, key=key, value=value, headers=[("trace", b"\xfe<b>h</b>")])
    assert producer.flush(30) == 0


def wait_for(client: httpx.Client, path: str, count: int, **params: str) -> dict:
    deadline = time.monotonic() + 60
    while True:
        r = client.get(path, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        if len(body["dead_letters"]) >= count:
            return body
        assert time.monotonic() < deadline, f"only {len(body['dead_letters'])} dead letters: {body}"
        time.sleep(0.3)


def test_dead_letters_decoded_with_their_cause(dead_letter_stack, kafka_bootstrap):
    agg, client, server = dead_letter_stack
    topics = TopicNames(agg)
    hostile = {
        "command_id": "cmd-hostile",
        "aggregate_id": "inv-dl",
        "type": XSS,  # no such command type: the handler dead-letters it (unknown_type)
        "payload": {"customer": XSS},
    }
    produce(
        kafka_bootstrap,
        [
            (topics.commands, b"inv-dl", json.dumps(hostile).encode()),
            (topics.commands, b"inv-bin", b"\xff\xfe" + XSS.encode()),  # undecodable: not even UTF-8
        ],
    )
    path = f"/aggregates/{agg}/dead-letters"
    body = wait_for(client, path, 2)
    assert body["topic"] == topics.dead_letters and body["complete"] is True
    by_key = {e["record_key"]: e for e in body["dead_letters"]}
    letter = by_key["inv-dl"]
    assert letter["decoded"] is True and letter["cause"]["code"] == "unknown_type"
    assert letter["command_id"] == "cmd-hostile"
    assert json.loads(letter["value"])["payload"]["customer"] == XSS  # the original command, as text
    assert letter["source"]["topic"] == topics.commands and isinstance(letter["partition"], int)
    assert letter["timestamp"] and letter["offset"] >= 0
    binary = by_key["inv-bin"]
    assert binary["cause"]["code"] == "undecodable" and binary["value_encoding"] == "base64"
    assert binary["value"] == "\\xff\\xfe" + XSS  # escaped bytes, then the text
    assert binary["command_id"] is None

    # Records on the topic that are no dead letters, and a newer handler's extra fields: shown, never a 5xx.
    future = {
        "error": {"code": "invalid_payload", "message": "too long", "truncated": True},
        "key": "inv-new",
        "raw_key": "aW52LW5ldw==",
        "value": '{"command_id": "cmd-new"',
        "value_truncated_at": 25,
        "source": {"topic": topics.commands, "partition": 0, "offset": 1},
    }
    produce(
        kafka_bootstrap,
        [
            (topics.dead_letters, b"inv-raw", b"\x00\xffnot json " + XSS.encode()),
            (topics.dead_letters, None, None),
            (topics.dead_letters, b"inv-new", json.dumps(future).encode()),
        ],
    )
    body = wait_for(client, path, 5)
    entries = body["dead_letters"]
    assert len(entries) == 5
    raw = next(e for e in entries if e["record_key"] == "inv-raw")
    assert raw["decoded"] is False and "not JSON" in raw["problem"]
    assert raw["raw"] == "\x00\\xffnot json " + XSS and raw["headers"] == [["trace", "\\xfe<b>h</b>"]]
    empty = next(e for e in entries if e["record_key"] is None)
    assert empty["decoded"] is False and empty["raw"] is None
    newer = next(e for e in entries if e["record_key"] == "inv-new")
    assert newer["cause"] == {"code": "invalid_payload", "message": "too long", "truncated": True}
    assert newer["extra"] == {"raw_key": "aW52LW5ldw==", "value_truncated_at": 25}
    assert newer["command_id"] is None and newer["value"] == future["value"]

    # Newest first, bounded by limit; filtered by aggregate id.
    newest = client.get(path, params={"limit": 1}).json()["dead_letters"]
    assert len(newest) == 1 and newest[0] == entries[0]
    stamps = [(e["timestamp"], e["partition"], e["offset"]) for e in entries]
    assert stamps == sorted(stamps, reverse=True)
    only = client.get(path, params={"aggregate_id": "inv-dl"}).json()
    assert [e["command_id"] for e in only["dead_letters"]] == ["cmd-hostile"] and only["aggregate_id"] == "inv-dl"
    assert client.get(path, params={"aggregate_id": "nobody"}).json()["dead_letters"] == []

    # The same auth as the API; bad parameters are 4xx.
    assert httpx.get(server.url + path).status_code == 401
    assert httpx.get(server.url + path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    for params in ({"limit": 0}, {"limit": 201}, {"limit": "x"}, {"aggregate_id": "a\x00b"}):
        r = client.get(path, params=params)
        assert r.status_code == 400, (params, r.text)
    r = client.get("/aggregates/no-such/dead-letters")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_aggregate"
    doc = client.get("/openapi.json").json()
    assert "/aggregates/{aggregate}/dead-letters" in doc["paths"]


def test_projector_skips_come_with_the_dead_letters(dead_letter_stack, kafka_bootstrap):
    """An event the journal cannot read is skipped and recorded; the dead-letter answer lists it."""
    agg, client, _ = dead_letter_stack
    topics = TopicNames(agg)
    broken = {"aggregate_id": "inv-skip", "version": 1, "type": "InvoiceCreated", "payload": "not an object"}
    produce(kafka_bootstrap, [(topics.events, b"inv-skip", json.dumps(broken).encode())])
    deadline = time.monotonic() + 60
    while True:
        body = client.get(f"/aggregates/{agg}/dead-letters", params={"aggregate_id": "inv-skip"}).json()
        if body["projector_skips"]:
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.3)
    skip = body["projector_skips"][0]
    assert skip["view"] == journal_view(agg) and skip["reason"] == "undecodable"
    assert skip["aggregate_id"] == "inv-skip" and skip["version"] == 1 and skip["topic"] == topics.events
    assert body["dead_letters"] == []


def test_a_broker_that_is_away_is_a_bounded_503(invoices_aggregate, kafka_bootstrap):
    """No broker at the address: the route answers 503 within its deadline; the server goes on."""
    cls = invoices_aggregate(partitions=1)
    with socket_port() as port:
        kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}")
        settings = GatewaySettings(kafka=kafka, host="127.0.0.1", dead_letters_timeout_s=2.0)
        server = GatewayServer(Gateway([AggregateSpec(cls())], settings))
        server._thread.start()  # never ready without a broker: wait for the HTTP server alone
        deadline = time.monotonic() + 30
        while not server.server.started:
            assert time.monotonic() < deadline, "the HTTP server did not start"
            time.sleep(0.05)
        try:
            for _ in range(2):
                r = httpx.get(f"{server.url}/aggregates/{cls.name}/dead-letters", timeout=30)
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "unavailable" and r.headers["retry-after"] == "1"
            assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 503  # still serving
        finally:
            server.stop()


class socket_port:
    """A loopback port nothing listens on (bound, never listening, for the test's duration)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_the_read_steps_back_for_older_letters_and_stays_bounded(
    kafka_bootstrap, kafka_admin, unique_name, monkeypatch
):
    """The reader alone (what the route runs in its worker thread): a filtered read finds an old letter
    behind many newer ones by stepping back; a missing topic is said; a tiny deadline answers at once,
    marked incomplete."""
    from foldline.errors import BrokerUnavailableError
    from foldline.gateway import deadletters
    from foldline.gateway.deadletters import TopicMissing, read_dead_letters
    from foldline.records import dead_letter
    from foldline.topics import aggregate_topics, ensure_topics

    agg = unique_name("dl")
    ensure_topics(kafka_admin, aggregate_topics(agg, 2))
    topic = TopicNames(agg).dead_letters
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)

    def letter(key: str, n: int) -> tuple[str, bytes, bytes]:
        value = json.dumps({"command_id": f"c-{key}-{n}", "aggregate_id": key}).encode()
        record = dead_letter(
            topic=f"{agg}.commands", partition=0, offset=n, key=key.encode(), value=value, code="x", message="m"
        )
        return topic, key.encode(), record

    produce(kafka_bootstrap, [letter("old", 0)])
    produce(kafka_bootstrap, [letter(f"new-{n % 7}", n) for n in range(1, 400)])

    scan = read_dead_letters(kafka, topic, limit=3, aggregate_id="old", timeout_s=20)
    assert [e["command_id"] for e in scan.entries] == ["c-old-0"] and scan.complete
    assert scan.scanned == 400  # it read back to the start of each partition, no further

    newest = read_dead_letters(kafka, topic, limit=5, aggregate_id=None, timeout_s=20)
    assert len(newest.entries) == 5 and newest.complete
    assert newest.scanned < 400  # only the tail of each partition
    produced = [int(e["command_id"].rsplit("-", 1)[1]) for e in newest.entries]
    assert all(n >= 300 for n in produced), produced  # from the tail (records of one batch may share a time)

    # Bounded by records read: with a budget of 50, a filtered read stops there and says so.
    monkeypatch.setattr(deadletters, "SCAN_BUDGET", 50)
    budget = read_dead_letters(kafka, topic, limit=3, aggregate_id="old", timeout_s=20)
    assert (budget.scanned, budget.complete, budget.entries) == (50, False, [])
    # Bounded by time: a deadline too short for anything answers incomplete or as unavailable, never hangs.
    try:
        hurried = read_dead_letters(kafka, topic, limit=200, aggregate_id="nobody", timeout_s=0.001)
    except BrokerUnavailableError:
        pass
    else:
        assert not hurried.complete and hurried.entries == []

    with pytest.raises(TopicMissing):
        read_dead_letters(kafka, unique_name("absent") + ".dead-letters", limit=5, aggregate_id=None, timeout_s=10)
