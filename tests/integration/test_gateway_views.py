"""Reads through the gateway: rows of real projections (projectors feeding SQLite), read-after-write
with ``min_version``, filters, paging, unknown views and columns, and the polled view stream."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from foldline.aggregate import AggregateSpec
from foldline.gateway import Gateway, GatewayServer
from foldline.gateway.views import ViewService
from foldline.projection import load_projection, open_target
from foldline.projection.wiring import build_projector
from foldline.settings import GatewaySettings, KafkaSettings, ProjectorSettings

pytestmark = pytest.mark.kafka

VIEWS = "foldline.examples.invoices.views"
CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}


def line(line_id: str, quantity: int, price: str) -> dict:
    return {"line_id": line_id, "description": f"item {line_id}", "quantity": quantity, "unit_price": price}


@pytest.fixture
def read_stack(request, kafka_bootstrap, invoices_aggregate, run_handler, tmp_path):
    """Handler, three projectors and a gateway; the database is SQLite unless the test asks for postgres."""
    cls = invoices_aggregate(partitions=3)
    run_handler(cls(), commit_interval_ms=5)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    if getattr(request, "param", "sqlite") == "postgres":
        database = request.getfixturevalue("postgres_url")
    else:
        database = f"sqlite:///{tmp_path / 'views.db'}"
    projectors = []
    for name in ("InvoiceList", "InvoiceLineItems", "CustomerTotals"):
        spec = load_projection(f"{VIEWS}:{name}", aggregate_name=cls.name)
        projector = build_projector(spec, ProjectorSettings(kafka=kafka, database=database, batch_wait_ms=5))
        thread = threading.Thread(target=projector.run, daemon=True)
        thread.start()
        projectors.append((projector, thread))
    deadline = time.monotonic() + 60
    while not all(p.ready() for p, _ in projectors):
        assert time.monotonic() < deadline, "projectors did not become ready"
        time.sleep(0.05)
    views = ViewService(
        database,
        {"invoice-list": cls.name, "invoice-line-items": cls.name, "customer-totals": cls.name},
        opener=open_target,
    )
    settings = GatewaySettings(kafka=kafka, host="127.0.0.1", view_poll_interval_s=0.1)
    gateway = Gateway([AggregateSpec(cls())], settings, views)
    with GatewayServer(gateway) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield cls.name, client, server
    for projector, _ in projectors:
        projector.stop()
    for _, thread in projectors:
        thread.join(30)


def submit(client, agg, aggregate_id, type_, payload=None):
    r = client.post(
        f"/aggregates/{agg}/commands", json={"aggregate_id": aggregate_id, "type": type_, "payload": payload or {}}
    )
    assert r.status_code == 200, r.text
    return r.json()["version"]


def test_read_after_write_with_min_version(read_stack):
    agg, client, _ = read_stack
    version = submit(client, agg, "inv-1", "CreateInvoice", CREATE)
    r = client.get("/views/invoice-list/rows", params={"aggregate_id": "inv-1", "min_version": version})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] >= version and len(body["rows"]) == 1
    row = body["rows"][0]
    assert row["id"] == "inv-1" and row["status"] == "draft" and row["total"] == "0.00"
    assert row["aggregate_version"] == 1 and row["issue_date"] == "2026-11-01"

    submit(client, agg, "inv-1", "AddLineItem", line("a", 3, "100.00"))
    submit(client, agg, "inv-1", "AddLineItem", line("b", 1, "45.50"))
    version = submit(client, agg, "inv-1", "RemoveLineItem", {"line_id": "b"})
    for _ in range(3):  # every read with min_version sees its own write, immediately
        r = client.get("/views/invoice-list/rows", params={"aggregate_id": "inv-1", "min_version": version})
        assert r.json()["rows"][0]["total"] == "300.00" and r.json()["rows"][0]["aggregate_version"] == version
    items = client.get(
        "/views/invoice-line-items/rows",
        params={"invoice_id": "inv-1", "aggregate_id": "inv-1", "min_version": version},
    ).json()
    assert [i["line_id"] for i in items["rows"]] == ["a"] and items["rows"][0]["amount"] == "300.00"


@pytest.mark.postgres
@pytest.mark.parametrize("read_stack", ["postgres"], indirect=True)
def test_read_after_write_on_postgres(read_stack):
    agg, client, _ = read_stack
    submit(client, agg, "inv-pg", "CreateInvoice", CREATE)
    version = submit(client, agg, "inv-pg", "AddLineItem", line("a", 2, "12.50"))
    r = client.get("/views/invoice-list/rows", params={"aggregate_id": "inv-pg", "min_version": version})
    assert r.status_code == 200 and r.json()["rows"][0]["total"] == "25.00"
    assert client.get("/views/invoice-list/rows", params={"colour": "red"}).status_code == 400


def test_filters_paging_and_order(read_stack):
    agg, client, _ = read_stack
    last = {}
    for i, customer in enumerate(["Zeta", "Alpha", "Alpha"]):
        last[f"inv-{i}"] = submit(client, agg, f"inv-{i}", "CreateInvoice", {**CREATE, "customer": customer})
    for aggregate_id, version in last.items():
        assert (
            client.get(
                "/views/invoice-list/rows", params={"aggregate_id": aggregate_id, "min_version": version}
            ).status_code
            == 200
        )
    rows = client.get("/views/invoice-list/rows", params={"customer": "Alpha", "order_by": "-id"}).json()["rows"]
    assert [r["id"] for r in rows] == ["inv-2", "inv-1"]
    page = client.get("/views/invoice-list/rows", params={"order_by": "id", "limit": 1, "offset": 1}).json()
    assert [r["id"] for r in page["rows"]] == ["inv-1"] and page["limit"] == 1 and page["offset"] == 1
    totals = client.get("/views/customer-totals/rows", params={"customer": "Alpha"}).json()["rows"]
    deadline = time.monotonic() + 30
    while (not totals or totals[0]["invoices"] != 2) and time.monotonic() < deadline:
        time.sleep(0.05)
        totals = client.get("/views/customer-totals/rows", params={"customer": "Alpha"}).json()["rows"]
    assert totals[0]["invoices"] == 2


def test_view_errors(read_stack):
    _, client, _ = read_stack
    r = client.get("/views/no-such-view/rows")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_view"
    r = client.get("/views/invoice-list/rows", params={"colour": "red"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_column"
    r = client.get("/views/invoice-list/rows", params={"order_by": "colour"})
    assert r.status_code == 400
    r = client.get("/views/invoice-list/rows", params={"min_version": 1})
    assert r.status_code == 400 and "aggregate_id" in r.json()["error"]["message"]
    r = client.get("/views/invoice-list/rows", params={"limit": 0})
    assert r.status_code == 400
    r = client.get("/views/invoice-list/rows", params={"total": "not-a-number"})
    assert r.status_code == 400
    started = time.monotonic()
    r = client.get("/views/invoice-list/rows", params={"aggregate_id": "never", "min_version": 1, "timeout": 0.5})
    assert r.status_code == 504 and r.json()["error"]["details"]["version"] is None
    assert time.monotonic() - started < 5
    assert [v["name"] for v in client.get("/views").json()["views"]] == [
        "customer-totals",
        "invoice-line-items",
        "invoice-list",
    ]


def test_view_stream_sends_rows_when_they_change(read_stack):
    agg, client, server = read_stack
    with (
        httpx.Client(base_url=server.url, timeout=30) as sse,
        sse.stream("GET", "/views/invoice-list/stream", params={"aggregate_id": "inv-s"}) as stream,
    ):
        assert stream.status_code == 200
        events = _events(stream.iter_lines())
        first = next(events)
        assert first == ("rows", {"view": "invoice-list", "rows": []})
        submit(client, agg, "inv-s", "CreateInvoice", CREATE)
        kind, data = next(events)
        assert kind == "rows" and data["rows"][0]["id"] == "inv-s" and data["rows"][0]["status"] == "draft"
        submit(client, agg, "inv-s", "AddLineItem", line("a", 2, "10.00"))
        kind, data = next(events)
        assert data["rows"][0]["total"] == "20.00"


def _events(lines):
    kind = None
    for text in lines:
        if text.startswith("event: "):
            kind = text[7:]
        elif text.startswith("data: "):
            yield kind, json.loads(text[6:])


def test_without_projections_every_view_of_the_database_is_served(read_stack, kafka_bootstrap, tmp_path):
    agg, client, server = read_stack
    version = submit(client, agg, "inv-open", "CreateInvoice", CREATE)
    database = f"sqlite:///{tmp_path / 'views.db'}"
    gateway = Gateway(
        [AggregateSpec(type(server.gateway.specs[agg].aggregate)())],
        GatewaySettings(kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap), host="127.0.0.1"),
        ViewService(database, {}, opener=open_target),
    )
    with GatewayServer(gateway) as open_server, httpx.Client(base_url=open_server.url, timeout=30) as c:
        r = c.get("/views/invoice-line-items/rows", params={"aggregate_id": "inv-open", "min_version": version})
        assert r.status_code == 200 and r.json()["rows"] == []  # no line items yet, but the view is there
        assert c.get("/views/no-such-view/rows").status_code == 404
        names = [v["name"] for v in c.get("/views").json()["views"]]
        assert names == ["customer-totals", "invoice-line-items", "invoice-list"]
