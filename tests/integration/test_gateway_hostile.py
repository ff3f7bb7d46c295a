"""Hostile requests against a real gateway, handler, projector (PostgreSQL) and broker (issue 10, defects 5-7).

Every bad request gets a 4xx with a clear message, a body that is valid UTF-8 JSON, and no SQL text or
stack trace; slow clients are cut off at the configured timeouts while others are served; the gateway
answers a valid command and a valid read after all of it.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import httpx
import pytest

from foldline.gateway import Gateway, GatewayServer
from foldline.gateway.views import ViewService
from foldline.projection import open_target
from tests.integration.conftest import gateway_settings

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]  # hostile_stack: tests/integration/conftest.py

CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}
#: What must never appear in a response: SQL, a driver's or Python's error text.
LEAKS = ("SELECT", "INSERT", "psycopg", "Traceback", "sqlite3", 'File "')


def assert_clean_4xx(response: httpx.Response, status: int | None = None) -> dict:
    """A 4xx (``status`` if given) whose body is UTF-8 JSON with an error code and message, leaking nothing."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if status is not None:
        assert response.status_code == status, response.text
    text = response.content.decode("utf-8")  # strict: the body itself always encodes
    body = json.loads(text)
    assert body["error"]["code"] and body["error"]["message"], body
    for leak in LEAKS:
        assert leak not in text, (leak, text)
    return body


def command(aggregate_id: str, type_: str, payload: dict) -> bytes:
    return json.dumps({"aggregate_id": aggregate_id, "type": type_, "payload": payload}).encode()


# Raw bodies: json.dumps cannot write a lone surrogate escape or an integer the way an attacker would.
SURROGATE = "\\ud800"
BAD_COMMANDS = {
    "surrogate in aggregate_id": (
        b'{"aggregate_id": "inv-'
        + SURROGATE.encode()
        + b'", "type": "CreateInvoice", "payload": '
        + json.dumps(CREATE).encode()
        + b"}",
        "invalid_value",
    ),
    "surrogate in a payload field": (
        b'{"aggregate_id": "inv-s", "type": "CreateInvoice", "payload": {"customer": "A'
        + SURROGATE.encode()
        + b'", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}}',
        "invalid_value",
    ),
    "surrogate in type": (b'{"aggregate_id": "inv-s", "type": "Create' + SURROGATE.encode() + b'"}', "invalid_value"),
    "surrogate in a key": (b'{"aggregate_id": "inv-s", "type": "X", "payload": {"\\udfff": 1}}', "invalid_value"),
    "expected_version beyond 64 bits": (
        b'{"aggregate_id": "inv-s", "type": "CreateInvoice", "expected_version": ' + str(10**30).encode() + b"}",
        "invalid_value",
    ),
    "quantity beyond 64 bits": (
        b'{"aggregate_id": "inv-s", "type": "AddLineItem", "payload": {"line_id": "a", "description": "d", '
        b'"quantity": ' + str(10**30).encode() + b', "unit_price": "1.00"}}',
        "invalid_value",
    ),
    "quantity 2**63": (
        b'{"aggregate_id": "inv-s", "type": "AddLineItem", "payload": {"line_id": "a", "description": "d", '
        b'"quantity": ' + str(2**63).encode() + b', "unit_price": "1.00"}}',
        "invalid_value",
    ),
    "NUL in aggregate_id": (command("inv-\x00", "CreateInvoice", CREATE), "invalid_value"),
    "NUL in a payload field": (command("inv-n", "CreateInvoice", {**CREATE, "customer": "A\x00B"}), "invalid_value"),
    "unit_price 1e999999": (
        command("inv-s", "AddLineItem", {"line_id": "a", "description": "d", "quantity": 1, "unit_price": "1e999999"}),
        "invalid_payload",
    ),
    "NaN": (b'{"aggregate_id": "inv-s", "type": "SendInvoice", "payload": {}, "expected_version": NaN}', None),
    "1e999 as a number": (b'{"aggregate_id": "inv-s", "type": "SendInvoice", "expected_version": 1e999}', None),
    "nested 10,000 deep": (
        b'{"aggregate_id": "x", "type": "X", "payload": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        None,
    ),
}


def test_bad_commands_get_a_clear_4xx(hostile_stack):
    agg, client, _ = hostile_stack()
    with client:
        for name, (body, code) in BAD_COMMANDS.items():
            r = client.post(f"/aggregates/{agg}/commands", content=body, headers={"content-type": "application/json"})
            error = assert_clean_4xx(r)
            assert code is None or error["error"]["code"] == code, (name, error)
        # Still serving: a valid command and its row.
        r = client.post(f"/aggregates/{agg}/commands", content=command("inv-ok", "CreateInvoice", CREATE))
        assert r.status_code == 200, r.text
        r = client.get("/views/invoice-list/rows", params={"aggregate_id": "inv-ok", "min_version": 1, "timeout": 2})
        assert r.status_code == 200 and r.json()["rows"][0]["customer"] == "ACME", r.text


def test_only_json_bodies_are_accepted(hostile_stack):
    agg, client, _ = hostile_stack()
    body = command("inv-ct", "CreateInvoice", CREATE)
    with client:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
            r = client.post(f"/aggregates/{agg}/commands", content=body, headers={"content-type": content_type})
            assert_clean_4xx(r, 415)
        r = client.post(
            f"/aggregates/{agg}/commands", content=body, headers={"content-type": "application/json; charset=utf-8"}
        )
        assert r.status_code == 200, r.text
        r = client.post(f"/aggregates/{agg}/commands", content=command("inv-ct2", "CreateInvoice", CREATE))
        assert r.status_code == 200, r.text  # no Content-Type at all (scripts): taken as JSON


BAD_READS = {
    "offset 10**20": {"offset": str(10**20)},
    "offset 2**63": {"offset": str(2**63)},
    "offset with 5000 digits": {"offset": "9" * 5000},
    "NUL in a filter": {"customer": "A\x00B"},
    "NUL in aggregate_id": {"aggregate_id": "inv-\x00"},
    "NUL in aggregate_id with min_version": {"aggregate_id": "inv-\x00", "min_version": "1"},
    "total 1e999999": {"total": "1e999999"},
    "total with 20000 decimals": {"total": "0." + "1" * 20000},
    "integer column beyond 64 bits": {"aggregate_version": str(10**30)},
    "min_version beyond 64 bits": {"aggregate_id": "inv-1", "min_version": str(10**30)},
    "timeout nan": {"aggregate_id": "inv-1", "min_version": "1", "timeout": "nan"},
    "NUL in order_by": {"order_by": "id\x00"},
}


def test_bad_reads_get_a_clear_4xx_without_sql(hostile_stack):
    agg, client, _ = hostile_stack()
    with client:
        assert client.post(f"/aggregates/{agg}/commands", content=command("inv-1", "CreateInvoice", CREATE)).is_success
        for name, params in BAD_READS.items():
            for route in ("/views/invoice-list/rows", "/views/invoice-list/stream"):
                if route.endswith("stream") and "min_version" in params:
                    continue
                r = client.get(route, params=params)
                body = assert_clean_4xx(r, 400)
                assert body["error"]["code"] in ("invalid_query", "unknown_column"), (name, body)
        r = client.get("/views/invoice-list/rows", params={"offset": str(2**63 - 1)})
        assert r.status_code == 200 and r.json()["rows"] == []  # the largest offset is a valid, empty page
        r = client.get("/views/invoice-list/rows", params={"aggregate_id": "inv-1", "min_version": 1, "timeout": 2})
        assert r.status_code == 200 and len(r.json()["rows"]) == 1


def test_openapi_documents_views_and_401(hostile_stack, kafka_bootstrap, postgres_url):
    agg, client, server = hostile_stack(token="t0ken")
    headers = {"authorization": "Bearer t0ken"}
    with client:
        doc = client.get("/openapi.json", headers=headers).json()
        assert doc["paths"]["/views/{view}/rows"]["get"]["parameters"][0]["schema"]["enum"] == ["invoice-list"]
        for path, operations in doc["paths"].items():
            for method, operation in operations.items():
                if path in ("/healthz", "/readyz", "/metrics"):
                    assert operation["security"] == [] and "401" not in operation["responses"]
                else:
                    assert "401" in operation["responses"], (path, method)
                    assert client.request(method, path.replace("{aggregate}", agg)).status_code == 401
    # A database but no declared projection: every view of the database, named in the document.
    gateway = Gateway(
        [server.gateway.specs[agg]],
        gateway_settings(kafka_bootstrap),
        ViewService(postgres_url, {}, opener=open_target),
    )
    with GatewayServer(gateway) as open_server, httpx.Client(base_url=open_server.url, timeout=30) as c:
        doc = c.get("/openapi.json").json()
        assert doc["paths"]["/views/{view}/rows"]["get"]["parameters"][0]["schema"]["enum"] == ["invoice-list"]


# -- slow clients --------------------------------------------------------------------------------------
def _trickle(port: int, head: bytes, body: bytes, every: float, budget: float) -> tuple[str, bytes, int]:
    """Send ``head`` at once, then ``body`` a byte every ``every`` seconds; returns how it ended ("closed" by
    the server, or "finished" sending), what the server sent, and how many bytes of ``body`` went out."""
    data = body
    received = b""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=every) as sock:
        sock.sendall(head)
        start = time.monotonic()
        while sent < len(data) and time.monotonic() - start < budget:
            try:
                sock.sendall(data[sent : sent + 1])
                sent += 1
            except OSError:
                return "closed", received, sent
            try:
                chunk = sock.recv(65536)
                if not chunk:
                    return "closed", received, sent
                received += chunk
            except TimeoutError:
                pass
            except OSError:  # reset: the server closed with our bytes unread
                return "closed", received, sent
        return "finished", received, sent


def test_slow_clients_are_cut_off_and_others_served(hostile_stack, caplog, capfd):
    agg, client, server = hostile_stack(header_timeout_s=1.0, body_timeout_s=1.5, max_connections=50)
    head = (
        f"POST /aggregates/{agg}/commands HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-Padding: {'p' * 200}\r\n"
    ).encode()
    body = command("inv-slow", "CreateInvoice", CREATE)
    outcomes: dict[str, tuple[str, bytes, int]] = {}

    def slow_headers() -> None:  # the headers alone would take ~60 s at this pace
        outcomes["headers"] = _trickle(server.port, b"", head + b"\r\n", every=0.2, budget=90)

    def slow_body() -> None:  # headers at once, then the body at a pace that would take ~40 s
        outcomes["body"] = _trickle(
            server.port, head + f"Content-Length: {len(body)}\r\n\r\n".encode(), body, every=0.2, budget=90
        )

    def silent() -> None:  # connects and never sends a byte
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            outcomes["silent"] = ("closed" if sock.recv(1) == b"" else "data", b"", 0)

    caplog.set_level(logging.INFO)
    threads = [threading.Thread(target=f, daemon=True) for f in (slow_headers, slow_body, silent)]
    for thread in threads:
        thread.start()
    served = 0
    with client:
        while any(t.is_alive() for t in threads):
            assert client.get("/healthz").status_code == 200  # others are served meanwhile
            served += 1
            time.sleep(0.1)
        r = client.post(f"/aggregates/{agg}/commands", content=command("inv-fast", "CreateInvoice", CREATE))
        assert r.status_code == 200, r.text
        metrics_text = client.get("/metrics").text
    for thread in threads:
        thread.join(1)
    ended, _, sent = outcomes["headers"]
    assert ended == "closed" and sent < len(head), outcomes["headers"]
    ended, received, sent = outcomes["body"]
    assert ended == "closed" and sent < len(body), outcomes["body"]
    # The 408 goes out just before the close; a reset may discard it on our side, so the server's count says.
    assert received == b"" or received.startswith(b"HTTP/1.1 408"), received
    assert 'route="post_command",status="408"' in metrics_text
    assert outcomes["silent"][0] == "closed"
    assert served >= 3
    assert not [r for r in caplog.records if r.exc_info], "a slow client produced a traceback"
    captured = capfd.readouterr()
    assert "request headers not complete in time" in captured.out and "request body not complete" in captured.out
    assert "Traceback" not in captured.out + captured.err


def test_connection_limit_and_disconnect_without_traceback(hostile_stack, caplog, capfd):
    agg, client, server = hostile_stack(max_connections=4, header_timeout_s=30.0)
    caplog.set_level(logging.INFO)
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 503")
    finally:
        for sock in idle:
            sock.close()
    # A client that goes away mid-body: one log line, no traceback, and the next request is served.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"POST /aggregates/{agg}/commands HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{{".encode())
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    with client:
        while time.monotonic() < deadline:  # the closed sockets leave the server's count
            if client.get("/healthz").status_code == 200:
                break
            time.sleep(0.1)
        assert client.get("/healthz").status_code == 200
    out = ""
    deadline = time.monotonic() + 10
    while "client disconnected" not in out and time.monotonic() < deadline:
        time.sleep(0.05)
        captured = capfd.readouterr()
        out += captured.out + captured.err
    assert "client disconnected before sending its whole body" in out  # foldline's log line (structlog)
    assert "Traceback" not in out and "Exception in ASGI" not in out, out
    assert not [r for r in caplog.records if r.exc_info], "a disconnect produced a traceback"
