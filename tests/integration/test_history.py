"""History and time travel against real Kafka and both databases: the event journal projection fed by a
real command handler, the gateway's ``/events`` and ``/state`` routes, and ``foldline history`` / ``state``.

The tally aggregate's event is at schema version 2; events written by "older code" at version 1 (put on
the topic directly, as an earlier deployment would have) are kept raw in the journal and upcast when folded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer

from foldline.aggregate import Aggregate, AggregateSpec, Rejection
from foldline.gateway import Gateway, GatewayServer
from foldline.gateway.views import ViewService
from foldline.ids import AggregateId, CommandId
from foldline.projection import open_target
from foldline.projection.journal import journal_projection, journal_view
from foldline.projection.wiring import build_projector
from foldline.records import EventRecord
from foldline.settings import GatewaySettings, KafkaSettings, ProjectorSettings
from foldline.topics import TopicNames, aggregate_topics, ensure_topics

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Tally:
    total: int = 0
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Add:
    amount: int
    note: str = ""


@dataclass(frozen=True)
class Added:
    __schema_version__ = 2  # version 1 was {"n": int}; the note came with version 2

    amount: int
    note: str


def added_v1_to_v2(payload: dict) -> dict:
    return {"amount": payload["n"], "note": "(v1)"}


class Tallies(Aggregate[Tally]):
    name = "tally"
    state_type = Tally
    commands = (Add,)
    events = (Added,)
    upcasters = {("Added", 1): added_v1_to_v2}

    def initial_state(self) -> Tally:
        return Tally()

    def decide(self, state: Tally, command: Add):
        if command.amount <= 0:
            return Rejection("the amount must be positive")
        return [Added(command.amount, command.note)]

    def evolve(self, state: Tally, event: Added) -> Tally:
        return Tally(state.total + event.amount, (*state.notes, event.note))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def history_stack(request, kafka_bootstrap, kafka_admin, unique_name, run_handler, tmp_path):
    """A tally handler, its journal projector into the database of the param, and a gateway."""
    cls: type[Tallies] = type("Tallies_t", (Tallies,), {"name": unique_name("tally")})
    ensure_topics(kafka_admin, aggregate_topics(cls.name, 2))
    run_handler(cls(), commit_interval_ms=5)
    if request.param == "postgres":
        database = request.getfixturevalue("postgres_url")
    else:
        database = f"sqlite:///{tmp_path / 'views.db'}"
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
    settings = GatewaySettings(kafka=kafka, host="127.0.0.1", read_timeout_s=20.0)
    gateway = Gateway([AggregateSpec(cls())], settings, views)
    with GatewayServer(gateway) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield cls, client, server
    projector.stop()
    thread.join(30)


def foldline(*args):
    env = {k: v for k, v in os.environ.items() if k != "FOLDLINE_GATEWAY_TOKEN"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "foldline.cli", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def add(client, agg, aggregate_id, amount, note=""):
    r = client.post(
        f"/aggregates/{agg}/commands",
        json={"aggregate_id": aggregate_id, "type": "Add", "payload": {"amount": amount, "note": note}},
    )
    return r


def test_history_and_state_at_version(history_stack):
    cls, client, server = history_stack
    agg = cls.name
    before = datetime.now(UTC) - timedelta(seconds=1)
    versions = []
    for amount, note in [(5, "a"), (7, "<img src=x onerror=alert(1)>"), (11, "c")]:
        r = add(client, agg, "t-1", amount, note)
        assert r.status_code == 200, r.text
        versions.append(r.json()["version"])
    assert versions == [1, 2, 3]
    assert add(client, agg, "t-1", -1).status_code == 422  # a rejection writes no event

    r = client.get(f"/aggregates/{agg}/t-1/events", params={"min_version": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == 3
    events = body["events"]
    assert [e["version"] for e in events] == [1, 2, 3]
    assert [e["type"] for e in events] == ["Added"] * 3
    assert [e["schema_version"] for e in events] == [2, 2, 2]
    assert events[1]["payload"] == {"amount": 7, "note": "<img src=x onerror=alert(1)>"}
    assert all(e["command_id"] and e["recorded_at"] for e in events)

    for version, total in [(0, 0), (1, 5), (2, 12), (3, 23)]:
        r = client.get(f"/aggregates/{agg}/t-1/state", params={"version": version})
        assert r.status_code == 200, r.text
        assert r.json()["version"] == version and r.json()["state"]["total"] == total
        assert r.json()["last_version"] == 3
    latest = client.get(f"/aggregates/{agg}/t-1/state").json()
    assert latest["version"] == 3 and latest["state"]["notes"] == ["a", "<img src=x onerror=alert(1)>", "c"]

    # ?at=: before the first event nothing is folded; at the second event's time, two are.
    at_second = events[1]["recorded_at"]
    assert client.get(f"/aggregates/{agg}/t-1/state", params={"at": at_second}).json()["version"] == 2
    assert client.get(f"/aggregates/{agg}/t-1/state", params={"at": before.isoformat()}).json()["version"] == 0

    # bad input: clear 4xx
    r = client.get(f"/aggregates/{agg}/t-1/state", params={"version": 4})
    assert r.status_code == 404 and r.json()["error"]["code"] == "version_not_found"
    assert "is at version 3" in r.json()["error"]["message"]
    assert client.get(f"/aggregates/{agg}/t-1/state", params={"version": -1}).status_code == 400
    assert client.get(f"/aggregates/{agg}/t-1/state", params={"version": "x"}).status_code == 400
    r = client.get(f"/aggregates/{agg}/t-1/state", params={"at": "yesterday"})
    assert r.status_code == 400 and "ISO 8601" in r.json()["error"]["message"]
    assert client.get(f"/aggregates/{agg}/t-1/state", params={"at": at_second, "version": 1}).status_code == 400
    r = client.get(f"/aggregates/{agg}/nobody/events")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_aggregate_id"
    assert client.get(f"/aggregates/{agg}/nobody/state").status_code == 404
    assert client.get("/aggregates/no-such/t-1/events").status_code == 404
    assert client.get(f"/aggregates/{agg}/t-1/events", params={"limit": 0}).status_code == 400

    # paging
    page = client.get(f"/aggregates/{agg}/t-1/events", params={"limit": 2, "offset": 1}).json()
    assert [e["version"] for e in page["events"]] == [2, 3]

    # the OpenAPI document lists both routes
    paths = client.get("/openapi.json").json()["paths"]
    assert "/aggregates/{aggregate}/{aggregate_id}/events" in paths
    assert "/aggregates/{aggregate}/{aggregate_id}/state" in paths

    # the CLI, through the same gateway
    done = foldline("history", agg, "t-1", "--gateway", server.url)
    assert done.returncode == 0, done.stderr
    assert "3 event(s)" in done.stdout and "Added (schema 2)" in done.stdout and '"amount": 11' in done.stdout
    done = foldline("state", agg, "t-1", "--version", "2", "--gateway", server.url)
    assert done.returncode == 0, done.stderr
    assert "at version 2 of 3" in done.stdout and '"total": 12' in done.stdout
    done = foldline("state", agg, "t-1", "--version", "9", "--gateway", server.url)
    assert done.returncode == 2 and "version 9 does not exist" in done.stderr


def test_upcast_when_folding_old_events(history_stack, kafka_bootstrap):
    """Events an older deployment wrote at schema version 1 stay raw in the journal; the fold upcasts them."""
    cls, client, _ = history_stack
    agg = cls.name
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    topic = TopicNames(agg).events
    for version, n in [(1, 3), (2, 4)]:
        record = EventRecord(
            AggregateId("t-old"), "Added", version, {"n": n}, CommandId(f"old-{version}"), schema_version=1
        )
        producer.produce(topic, key=b"t-old", value=record.to_bytes())
    assert producer.flush(30) == 0

    r = client.get(f"/aggregates/{agg}/t-old/events", params={"min_version": 2})
    assert r.status_code == 200, r.text
    events = r.json()["events"]
    assert [(e["schema_version"], e["payload"]) for e in events] == [(1, {"n": 3}), (1, {"n": 4})]
    state = client.get(f"/aggregates/{agg}/t-old/state", params={"version": 1}).json()
    assert state["state"] == {"total": 3, "notes": ["(v1)"]}
    assert client.get(f"/aggregates/{agg}/t-old/state").json()["state"]["total"] == 7


def produce_events(bootstrap, topic, records):
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "partitioner": "murmur2_random"})
    for key, value in records:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def event(aggregate_id, version, type_="Added", payload=None, schema_version=2):
    payload = {"amount": version, "note": ""} if payload is None else payload
    record = EventRecord(
        AggregateId(aggregate_id), type_, version, payload, CommandId(f"c-{version}"), schema_version=schema_version
    )
    return aggregate_id.encode(), record.to_bytes()


def test_ids_that_collide_with_route_segments(history_stack):
    """An aggregate named "commands" (or "stream", or holding a "/") is reachable: never another route's."""
    cls, client, server = history_stack
    agg = cls.name
    for aggregate_id in ("commands", "stream", "a/b"):
        assert add(client, agg, aggregate_id, 2, aggregate_id).status_code == 200
        r = client.get(f"/aggregates/{agg}/{aggregate_id}/events", params={"min_version": 1})
        assert r.status_code == 200, (aggregate_id, r.text)
        assert r.json()["aggregate_id"] == aggregate_id and r.json()["events"][0]["payload"]["note"] == aggregate_id
        r = client.get(f"/aggregates/{agg}/{aggregate_id}/state")
        assert r.status_code == 200 and r.json()["state"]["notes"] == [aggregate_id], r.text
        r = client.get(f"/aggregates/{agg}/events", params={"aggregate_id": aggregate_id})
        assert r.status_code == 200 and r.json()["aggregate_id"] == aggregate_id
        r = client.get(f"/aggregates/{agg}/state", params={"aggregate_id": aggregate_id, "version": 1})
        assert r.status_code == 200 and r.json()["state"]["total"] == 2
    assert client.get(f"/aggregates/{agg}/events").status_code == 400  # the query form needs the id
    # Command results are still reachable, by path and (any id) by query.
    sent = add(client, agg, "t-cmd", 1).json()
    assert client.get(f"/aggregates/{agg}/commands/{sent['command_id']}").json()["status"] == "accepted"
    r = client.get(f"/aggregates/{agg}/commands", params={"command_id": sent["command_id"]})
    assert r.status_code == 200 and r.json()["command_id"] == sent["command_id"]
    r = client.get(f"/aggregates/{agg}/commands", params={"command_id": "events"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_command"
    done = foldline("history", agg, "commands", "--gateway", server.url)
    assert done.returncode == 0 and "1 event(s)" in done.stdout, done.stderr
    done = foldline("state", agg, "a/b", "--gateway", server.url)
    assert done.returncode == 0 and '"total": 2' in done.stdout, done.stderr


def test_events_the_journal_cannot_read_show_as_gaps_and_422(history_stack, kafka_bootstrap):
    """The journal never stops: an event of a type this code does not know is kept (and marked); a record
    it cannot read at all is passed over with its cause; the history shows both, folds answer 422."""
    cls, client, server = history_stack
    agg = cls.name
    topic = TopicNames(agg).events
    broken = json.dumps({"aggregate_id": "t-gap", "version": 2, "type": "Added", "payload": ["not", "an", "object"]})
    produce_events(
        kafka_bootstrap,
        topic,
        [
            event("t-gap", 1),
            (b"t-gap", broken.encode()),  # undecodable: skipped, its version missing from the journal
            event("t-gap", 3),
            event("t-gap", 4, "Renamed\x00<img src=x onerror=alert(1)>", {"to": "\x00x"}),  # unknown type, a NUL
            (b"t-gap", b"\xff not json at all"),  # nobody's: counted
            event("t-gap", 5),
        ],
    )
    r = client.get(f"/aggregates/{agg}/t-gap/events", params={"min_version": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    entries = body["events"]
    assert [(e["version"], bool(e.get("gap"))) for e in entries] == [
        (1, False),
        (2, True),
        (3, False),
        (4, False),
        (5, False),
    ]
    gap = entries[1]
    assert gap["to_version"] == 2 and gap["skipped"][0]["reason"] == "undecodable"
    assert "payload" in gap["skipped"][0]["error"] and gap["skipped"][0]["topic"] == topic
    assert body["unattributed_skips"] >= 1
    unknown = entries[3]
    assert unknown["type"] == "Renamed\\u0000<img src=x onerror=alert(1)>"  # kept, escaped where it must be
    assert unknown["payload"] == {"to": "\x00x"} and "Renamed" in unknown["undecodable"]

    # Paging: a gap shows on the page it falls in (once), never on a page past the end.
    page = client.get(f"/aggregates/{agg}/t-gap/events", params={"offset": 1, "limit": 1}).json()["events"]
    assert [(e["version"], bool(e.get("gap"))) for e in page] == [(2, True), (3, False)]
    page = client.get(f"/aggregates/{agg}/t-gap/events", params={"offset": 2, "limit": 1}).json()["events"]
    assert [(e["version"], bool(e.get("gap"))) for e in page] == [(4, False)]
    assert client.get(f"/aggregates/{agg}/t-gap/events", params={"offset": 9}).json()["events"] == []

    r = client.get(f"/aggregates/{agg}/t-gap/state", params={"version": 1})
    assert r.status_code == 200 and r.json()["state"]["total"] == 1
    for version in (2, 3, None):
        r = client.get(f"/aggregates/{agg}/t-gap/state", params={} if version is None else {"version": version})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "history_gap" and error["details"]["version"] == 2
        assert "lacks version 2" in error["message"] and "Traceback" not in r.text

    # A history without a gap but with an event this code cannot decode: 422 naming it, not a 500.
    produce_events(kafka_bootstrap, topic, [event("t-new", 1), event("t-new", 2, "Renamed", {"to": "y"})])
    assert client.get(f"/aggregates/{agg}/t-new/events", params={"min_version": 2}).status_code == 200
    r = client.get(f"/aggregates/{agg}/t-new/state")
    assert r.status_code == 422 and r.json()["error"]["code"] == "unfoldable_history", r.text
    assert r.json()["error"]["details"] == {"version": 2, "type": "Renamed", "schema_version": 2}
    assert "cannot be decoded" in r.json()["error"]["message"] and "Traceback" not in r.text
    assert client.get(f"/aggregates/{agg}/t-new/state", params={"version": 1}).json()["state"]["total"] == 1

    done = foldline("history", agg, "t-gap", "--gateway", server.url)
    assert done.returncode == 0 and "(missing)" in done.stdout and "undecodable here" in done.stdout, done.stderr
    assert "1 gap(s)" in done.stderr
    done = foldline("state", agg, "t-gap", "--gateway", server.url)
    assert done.returncode == 2 and "lacks version 2" in done.stderr
