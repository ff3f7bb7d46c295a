"""History and time travel against real Kafka and both databases: the event journal projection fed by a
real command handler, the gateway's ``/events`` and ``/state`` routes, and ``foldline history`` / ``state``.

The tally aggregate's event is at schema version 2; events written by "older code" at version 1 (put on
the topic directly, as an earlier deployment would have) are kept raw in the journal and upcast when folded.
"""

from __future__ import annotations

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
