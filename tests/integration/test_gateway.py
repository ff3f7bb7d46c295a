"""The gateway over real HTTP (httpx → uvicorn on loopback) with a real command handler and broker.

Every status a client can meet, two replicas answering for each other, idempotency and the SSE stream.
No bad input may ever produce a 500.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from foldline.aggregate import AggregateSpec
from foldline.gateway import Gateway, GatewayServer
from foldline.gateway.server import free_port
from foldline.settings import GatewaySettings, KafkaSettings
from tests.conftest import REPO, aggregate_path

pytestmark = pytest.mark.kafka

CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}
LINE = {"line_id": "a", "description": "Consulting", "quantity": 3, "unit_price": "100.00"}


def settings(bootstrap: str, **changes) -> GatewaySettings:
    return GatewaySettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap), host="127.0.0.1", command_timeout_s=20.0
    ).with_changes(**changes)


@pytest.fixture
def stack(kafka_bootstrap, invoices_aggregate, run_handler):
    """An invoices aggregate with a running handler, an idle second aggregate, and a gateway for both."""
    cls = invoices_aggregate(partitions=3)
    idle = invoices_aggregate(partitions=1)  # topics, but no handler: its commands time out
    run_handler(cls(), commit_interval_ms=5)
    gateway = Gateway([AggregateSpec(cls()), AggregateSpec(idle())], settings(kafka_bootstrap, max_body_bytes=4096))
    with GatewayServer(gateway) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield cls.name, idle.name, client, server


def post(client, agg, body, **params):
    return client.post(f"/aggregates/{agg}/commands", json=body, params=params)


def test_accepted_rejected_and_conflict(stack):
    agg, _, client, _ = stack
    r = post(client, agg, {"aggregate_id": "inv-1", "type": "CreateInvoice", "payload": CREATE})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "accepted" and body["version"] == 1 and body["events"] == ["InvoiceCreated"]
    assert r.headers["location"] == f"/aggregates/{agg}/commands/{body['command_id']}"

    r = post(client, agg, {"aggregate_id": "inv-1", "type": "CreateInvoice", "payload": CREATE})
    assert r.status_code == 422 and r.json()["reason"] == "the invoice already exists"
    assert r.json()["code"] == "rejected"

    r = post(client, agg, {"aggregate_id": "inv-1", "type": "AddLineItem", "payload": LINE, "expected_version": 7})
    assert r.status_code == 409 and r.json()["status"] == "conflict" and r.json()["version"] == 1

    r = post(client, agg, {"aggregate_id": "inv-1", "type": "AddLineItem", "payload": LINE, "expected_version": 1})
    assert r.status_code == 200 and r.json()["version"] == 2


def test_client_command_id_is_idempotent(stack):
    agg, _, client, _ = stack
    body = {"aggregate_id": "inv-2", "type": "CreateInvoice", "payload": CREATE, "command_id": "create-inv-2"}
    first = post(client, agg, body)
    again = post(client, agg, body)
    assert first.status_code == again.status_code == 200
    assert first.json()["command_id"] == again.json()["command_id"] == "create-inv-2"
    assert again.json()["version"] == 1 and again.json()["duplicate"] is True


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        (b"", "malformed_json"),
        (b"[1, 2]", "invalid_envelope"),
        (b'{"aggregate_id": "x", "type": "CreateInvoice", "payload": [1]}', "invalid_envelope"),
        (b'{"aggregate_id": "", "type": "CreateInvoice"}', "invalid_envelope"),
        (b'{"aggregate_id": "x", "type": "SendInvoice", "expected_version": -1}', "invalid_envelope"),
        (b'{"aggregate_id": "x", "type": "SendInvoice", "expected_version": true}', "invalid_envelope"),
        (b'{"aggregate_id": "x", "type": "SendInvoice", "command_id": "a/b"}', "invalid_envelope"),
        (b'{"aggregate_id": "x", "type": "SendInvoice", "colour": "red"}', "invalid_envelope"),
        (b'{"aggregate_id": "x", "type": "AddLineItem", "payload": {"line_id": "a"}}', "invalid_payload"),
        (
            b'{"aggregate_id": "x", "type": "RecordPayment", "payload": {"payment_id": "p", "amount": "-1", '
            b'"currency": "EUR"}}',
            "invalid_payload",
        ),
        (
            b'{"aggregate_id": "x", "type": "CreateInvoice", "payload": {"customer": "A", "currency": "EUR", '
            b'"issue_date": "2026-13-45", "due_date": "2026-12-01"}}',
            "invalid_payload",
        ),
        (b"[" * 100_0 + b"]" * 100_0, "malformed_json"),
    ],
)
def test_bad_bodies_are_400_and_never_reach_kafka(stack, raw, code):
    agg, _, client, _ = stack
    r = client.post(f"/aggregates/{agg}/commands", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code


def test_unknown_aggregate_and_command_type_are_404(stack):
    agg, _, client, _ = stack
    r = post(client, "no-such-aggregate", {"aggregate_id": "x", "type": "CreateInvoice", "payload": CREATE})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_aggregate"
    r = post(client, agg, {"aggregate_id": "x", "type": "ShredInvoice"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_command_type"
    assert "CreateInvoice" in r.json()["error"]["details"]["known"]
    r = client.get(f"/aggregates/{agg}/commands/never-sent")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_command"
    assert client.get("/no/such/route").status_code == 404
    assert client.put(f"/aggregates/{agg}/commands").status_code == 405
    r = client.get(f"/aggregates/{agg}/commands")  # the query form of a result by id, without the id
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_query"
    r = client.get(f"/aggregates/{agg}/commands", params={"command_id": "never-sent"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_command"


def test_body_too_large_is_413(stack):
    agg, _, client, _ = stack
    big = {"aggregate_id": "x", "type": "CreateInvoice", "payload": {**CREATE, "customer": "A" * 10_000}}
    r = post(client, agg, big)
    assert r.status_code == 413 and r.json()["error"]["details"]["max_bytes"] == 4096

    def chunks():  # no Content-Length: the limit holds while streaming too
        for _ in range(10):
            yield b" " * 1000

    r = client.post(f"/aggregates/{agg}/commands", content=chunks())
    assert r.status_code == 413


def test_no_handler_times_out_with_504_and_location(stack):
    _, idle, client, _ = stack
    started = time.monotonic()
    r = post(client, idle, {"aggregate_id": "x", "type": "CreateInvoice", "payload": CREATE}, timeout="1")
    assert r.status_code == 504
    assert 0.9 < time.monotonic() - started < 10
    error = r.json()["error"]
    assert error["code"] == "timeout" and r.headers["location"] == error["details"]["location"]
    assert client.get(r.headers["location"]).status_code == 404  # still unknown: nobody handled it


@pytest.mark.parametrize("query", ["wait=maybe", "timeout=0", "timeout=-3", "timeout=abc", "timeout=100000"])
def test_bad_query_parameters_are_400(stack, query):
    agg, _, client, _ = stack
    r = client.post(f"/aggregates/{agg}/commands?{query}", json={"aggregate_id": "x", "type": "SendInvoice"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_query"


def test_wait_false_answers_202_and_the_result_appears(stack):
    agg, _, client, _ = stack
    r = post(client, agg, {"aggregate_id": "inv-3", "type": "CreateInvoice", "payload": CREATE}, wait="false")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "pending" and r.headers["location"] == r.json()["location"]
    deadline = time.monotonic() + 30
    while (got := client.get(r.headers["location"])).status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got.status_code == 200 and got.json()["status"] == "accepted"
    assert got.json()["command_id"] == r.json()["command_id"]


def test_sse_stream_delivers_results_as_they_arrive(stack):
    agg, _, client, server = stack
    with (
        httpx.Client(base_url=server.url, timeout=30) as sse,
        sse.stream("GET", f"/aggregates/{agg}/stream", params={"aggregate_id": "inv-s"}) as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")
        assert next(lines).startswith(": subscribed")
        other = post(client, agg, {"aggregate_id": "inv-other", "type": "CreateInvoice", "payload": CREATE})
        sent = [
            post(client, agg, {"aggregate_id": "inv-s", "type": "CreateInvoice", "payload": CREATE}),
            post(client, agg, {"aggregate_id": "inv-s", "type": "AddLineItem", "payload": LINE}),
        ]
        assert [r.status_code for r in sent] == [200, 200] and other.status_code == 200
        events = []
        for line in lines:
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
                if len(events) == 2:
                    break
    assert [e["command_id"] for e in events] == [r.json()["command_id"] for r in sent]
    assert [e["version"] for e in events] == [1, 2]


def test_health_metrics_and_openapi(stack):
    agg, _, client, _ = stack
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").text == "ok\n"
    post(client, agg, {"aggregate_id": "inv-m", "type": "CreateInvoice", "payload": CREATE})
    metrics = client.get("/metrics").text
    assert f'foldline_gateway_requests_total{{aggregate="{agg}",route="post_command",status="200"}}' in metrics
    assert "foldline_gateway_request_seconds_bucket" in metrics
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path in (
        "/aggregates/{aggregate}/commands",
        "/aggregates/{aggregate}/commands/{command_id}",
        "/aggregates/{aggregate}/stream",
        "/views/{view}/rows",
        "/views/{view}/stream",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in doc["paths"], path
    post_op = doc["paths"]["/aggregates/{aggregate}/commands"]["post"]
    assert {"200", "202", "400", "401", "404", "409", "413", "422", "504"} <= set(post_op["responses"])
    assert doc["components"]["schemas"][f"Payload.{agg}.CreateInvoice"]["required"] == [
        "customer",
        "currency",
        "issue_date",
        "due_date",
    ]


def test_bearer_token(kafka_bootstrap, invoices_aggregate, run_handler):
    cls = invoices_aggregate(partitions=1)
    run_handler(cls(), commit_interval_ms=5)
    gateway = Gateway([AggregateSpec(cls())], settings(kafka_bootstrap, token="s3cret"))
    assert "s3cret" not in repr(gateway.settings)
    body = {"aggregate_id": "inv-t", "type": "CreateInvoice", "payload": CREATE}
    with GatewayServer(gateway) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic s3cret"}):
            r = client.post(f"/aggregates/{cls.name}/commands", json=body, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert client.get("/openapi.json").status_code == 401
        for open_path in ("/healthz", "/readyz", "/metrics"):
            assert client.get(open_path).status_code == 200
        r = client.post(f"/aggregates/{cls.name}/commands", json=body, headers={"authorization": "Bearer s3cret"})
        assert r.status_code == 200


def test_two_replicas_answer_for_each_other(kafka_bootstrap, invoices_aggregate, run_handler, tmp_path):
    """A command sent through replica A (a `foldline gateway` child process); its result read from B."""
    cls = invoices_aggregate(partitions=3)
    run_handler(cls(), commit_interval_ms=5)
    port = free_port()
    env = {
        **os.environ,
        "FOLDLINE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FOLDLINE_GATEWAY_HOST": "127.0.0.1",
        "FOLDLINE_LOG_FORMAT": "json",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    log = tmp_path / "gateway-a.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "foldline.cli", "gateway", "--aggregate", aggregate_path(cls), "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        a = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        deadline = time.monotonic() + 60
        while True:
            try:
                if a.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        gateway_b = Gateway([AggregateSpec(cls())], settings(kafka_bootstrap))
        with GatewayServer(gateway_b) as server_b, httpx.Client(base_url=server_b.url, timeout=30) as b:
            ids = []
            for i, via in enumerate((a, b, a, b)):
                r = post(via, cls.name, {"aggregate_id": f"inv-r{i}", "type": "CreateInvoice", "payload": CREATE})
                assert r.status_code == 200, r.text
                ids.append(r.json()["command_id"])
            for command_id in ids:  # each replica answers for commands sent through the other
                for replica in (a, b):
                    deadline = time.monotonic() + 30
                    while (got := replica.get(f"/aggregates/{cls.name}/commands/{command_id}")).status_code == 404:
                        assert time.monotonic() < deadline
                        time.sleep(0.05)
                    assert got.status_code == 200 and got.json()["status"] == "accepted"
        a.close()
    finally:
        proc.terminate()
        code = proc.wait(30)
    assert code == 0, log.read_text()


def test_a_fresh_replica_answers_for_recent_commands(stack, kafka_bootstrap):
    """Results are read from a recent time, not only from the end: a replica started later still knows them."""
    agg, _, client, _ = stack
    r = post(client, agg, {"aggregate_id": "inv-late", "type": "CreateInvoice", "payload": CREATE})
    assert r.status_code == 200
    command_id = r.json()["command_id"]
    late = Gateway([_spec(agg)], settings(kafka_bootstrap))
    with GatewayServer(late) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        got = c.get(f"/aggregates/{agg}/commands/{command_id}")
        assert got.status_code == 200 and got.json()["version"] == 1


def _spec(name: str) -> AggregateSpec:
    from tests.named_invoices import __getattr__ as named

    return AggregateSpec(named(name.replace("-", "_"))())


def test_garbage_never_gives_500(stack):
    agg, _, client, _ = stack
    rng = uuid.uuid4().hex
    probes = [
        ("POST", f"/aggregates/{agg}/commands", b"null"),
        ("POST", f"/aggregates/{agg}/commands", b'"text"'),
        ("POST", f"/aggregates/{agg}/commands", b"1e999999"),
        ("POST", f"/aggregates/{agg}/commands", b'{"aggregate_id": 5, "type": "CreateInvoice"}'),
        ("POST", f"/aggregates/{agg}/commands", b'{"aggregate_id": "x", "type": 5}'),
        (
            "POST",
            f"/aggregates/{agg}/commands",
            b'{"aggregate_id": "x", "type": "AddLineItem", "payload": '
            b'{"line_id": "a", "description": "d", "quantity": 1e400, '
            b'"unit_price": "NaN"}}',
        ),
        (
            "POST",
            f"/aggregates/{agg}/commands",
            b'{"aggregate_id": "x", "type": "CreateInvoice", "payload": {'
            b'"customer": null, "currency": 1, "issue_date": [], "due_date": {}}}',
        ),
        ("POST", f"/aggregates/{agg}/commands", b'{"aggregate_id": "' + b"x" * 300 + b'", "type": "SendInvoice"}'),
        ("POST", f"/aggregates/{agg}/commands", b'{"aggregate_id": "x", "type": "__init__"}'),
        ("POST", f"/aggregates/{agg}/commands?timeout=nan", b'{"aggregate_id": "x", "type": "SendInvoice"}'),
        ("POST", f"/aggregates/{agg}/commands?timeout=inf", b'{"aggregate_id": "x", "type": "SendInvoice"}'),
        ("GET", f"/aggregates/{agg}/commands/{rng}", b""),
        ("GET", f"/aggregates/%00/commands/{rng}", b""),
        ("GET", "/aggregates/../../etc/passwd/stream", b""),
        ("GET", "/views/nope/rows", b""),
        ("GET", "/views/nope/stream", b""),
        ("DELETE", f"/aggregates/{agg}/commands", b""),
        ("PUT", "/metrics", b"x"),
    ]
    for method, path, body in probes:
        r = client.request(method, path, content=body)
        assert r.status_code < 500, (method, path, body[:80], r.status_code, r.text)
        if r.status_code >= 400:
            assert "error" in r.json(), (path, r.text)
