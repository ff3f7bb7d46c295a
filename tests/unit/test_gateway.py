"""The gateway's parts that need no service: envelope checks, the result hub, auth, OpenAPI, settings."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from foldline.aggregate import AggregateSpec
from foldline.errors import CommandError, ConfigurationError, RetryableError
from foldline.examples.invoices import Invoices
from foldline.gateway.app import BearerAuth
from foldline.gateway.commands import RESULT_STATUS, parse_envelope
from foldline.gateway.errors import BadRequest, GatewayTimeout, NotFound, Unavailable
from foldline.gateway.openapi import openapi_document
from foldline.gateway.results import ResultHub
from foldline.gateway.views import ViewService
from foldline.ids import AggregateId, CommandId
from foldline.records import CommandResult, Status
from foldline.settings import GatewaySettings

CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}


class OneAggregate:
    def __init__(self) -> None:
        self.invoices = AggregateSpec(Invoices())

    def spec(self, name: str) -> AggregateSpec:
        if name != "invoices":
            raise NotFound(name, code="unknown_aggregate")
        return self.invoices


# -- settings -------------------------------------------------------------------------------------------
def test_gateway_settings_from_env_keep_the_token_out_of_repr():
    s = GatewaySettings.from_env(
        {
            "FOLDLINE_GATEWAY_TOKEN": "hunter2",
            "FOLDLINE_GATEWAY_PORT": "9001",
            "FOLDLINE_GATEWAY_COMMAND_TIMEOUT_S": "2.5",
            "FOLDLINE_KAFKA_BOOTSTRAP": "k:1",
            "FOLDLINE_GATEWAY_MAX_BODY_BYTES": "2048",
        }
    )
    assert s.token == "hunter2" and "hunter2" not in repr(s)
    assert s.port == 9001 and s.command_timeout_s == 2.5 and s.max_body_bytes == 2048
    assert s.kafka.bootstrap_servers == "k:1"
    assert GatewaySettings.from_env({}).token == ""


@pytest.mark.parametrize(
    "env",
    [
        {"FOLDLINE_GATEWAY_PORT": "http"},
        {"FOLDLINE_GATEWAY_PORT": "70000"},
        {"FOLDLINE_GATEWAY_COMMAND_TIMEOUT_S": "0"},
        {"FOLDLINE_GATEWAY_COMMAND_TIMEOUT_S": "90", "FOLDLINE_GATEWAY_MAX_COMMAND_TIMEOUT_S": "60"},
        {"FOLDLINE_GATEWAY_READ_TIMEOUT_S": "-1"},
        {"FOLDLINE_GATEWAY_MAX_BODY_BYTES": "10"},
    ],
)
def test_gateway_settings_reject_bad_values(env):
    with pytest.raises(ConfigurationError):
        GatewaySettings.from_env(env)
    with pytest.raises(ConfigurationError):
        GatewaySettings().with_changes(colour="red")


# -- envelopes --------------------------------------------------------------------------------------------
def test_a_valid_envelope_becomes_a_command_record():
    env = parse_envelope(
        OneAggregate(),
        "invoices",
        {"aggregate_id": "inv-1", "type": "CreateInvoice", "payload": CREATE, "expected_version": 0},
    )
    assert env.aggregate_id == "inv-1" and env.type == "CreateInvoice" and env.expected_version == 0
    assert len(env.command_id) == 32 and env.payload == CREATE
    again = parse_envelope(
        OneAggregate(), "invoices", {"aggregate_id": "inv-1", "type": "SendInvoice", "command_id": "client-1"}
    )
    assert again.command_id == "client-1" and again.payload == {}


def test_the_gateway_stamps_the_command_schema_version_it_checked():
    """A command checked against ``__schema_version__ = 3`` travels as schema version 3, so a handler that
    runs newer code upcasts it instead of reading it as its own current version."""
    from dataclasses import dataclass

    from foldline.records import CommandEnvelope

    @dataclass(frozen=True)
    class SendInvoice:
        __foldline_type__ = "SendInvoice"
        __schema_version__ = 3

    class Newer(Invoices):
        commands = (*[c for c in Invoices.commands if c.__name__ != "SendInvoice"], SendInvoice)  # type: ignore[assignment]
        command_upcasters = {("SendInvoice", 1): lambda p: p, ("SendInvoice", 2): lambda p: p}

    class Gateway(OneAggregate):
        def __init__(self) -> None:
            self.invoices = AggregateSpec(Newer())

    env = parse_envelope(Gateway(), "invoices", {"aggregate_id": "inv-1", "type": "SendInvoice"})
    assert env.schema_version == 3
    assert CommandEnvelope.from_bytes(env.to_bytes()).schema_version == 3
    assert parse_envelope(OneAggregate(), "invoices", {"aggregate_id": "i", "type": "SendInvoice"}).schema_version == 1


@pytest.mark.parametrize(
    ("body", "error", "code"),
    [
        ({"aggregate_id": "x", "type": "Nope"}, NotFound, "unknown_command_type"),
        ({"aggregate_id": "x", "type": "AddLineItem", "payload": {"line_id": "a"}}, BadRequest, "invalid_payload"),
        (
            {
                "aggregate_id": "x",
                "type": "AddLineItem",
                "payload": {"line_id": "a", "description": "d", "quantity": 0, "unit_price": "1"},
            },
            BadRequest,
            "invalid_payload",
        ),
        ({"aggregate_id": "x"}, BadRequest, "invalid_envelope"),
        ({"type": "SendInvoice"}, BadRequest, "invalid_envelope"),
        ({"aggregate_id": "x", "type": "SendInvoice", "expected_version": "3"}, BadRequest, "invalid_envelope"),
        ({"aggregate_id": "x", "type": "SendInvoice", "command_id": ""}, BadRequest, "invalid_envelope"),
        ({"aggregate_id": "x", "type": "SendInvoice", "command_id": "x" * 129}, BadRequest, "invalid_envelope"),
        ({"aggregate_id": "x", "type": "SendInvoice", "extra": 1}, BadRequest, "invalid_envelope"),
        ([], BadRequest, "invalid_envelope"),
    ],
)
def test_bad_envelopes_are_refused_before_kafka(body, error, code):
    with pytest.raises(error) as caught:
        parse_envelope(OneAggregate(), "invoices", body)
    assert caught.value.code == code
    assert caught.value.response().status_code == error.status


def test_http_errors_sit_in_the_foldline_hierarchy():
    assert issubclass(BadRequest, CommandError)
    assert issubclass(Unavailable, RetryableError) and issubclass(GatewayTimeout, RetryableError)
    assert RESULT_STATUS == {"accepted": 200, "rejected": 422, "conflict": 409, "failed": 400}


# -- the result hub ------------------------------------------------------------------------------------------
def result(command_id: str, aggregate_id: str = "inv-1", version: int = 1) -> CommandResult:
    return CommandResult(
        CommandId(command_id),
        AggregateId(aggregate_id),
        Status.ACCEPTED,
        version,
        recorded_at="2026-01-01T00:00:00.000Z",
    )


def test_hub_resolves_waiters_and_bounds_its_index():
    async def scenario():
        hub = ResultHub(capacity=2)
        first = hub.waiter("invoices", "c1")
        second = hub.waiter("invoices", "c1")
        other = hub.waiter("other", "c1")
        hub.dispatch([("invoices", result("c1")), ("invoices", result("c2")), ("invoices", result("c3"))])
        assert first.result() == second.result() == result("c1")
        assert not other.done() and hub.pending() == 1
        hub.forget("other", "c1", other)
        assert hub.pending() == 0
        assert hub.get("invoices", "c1") is None  # dropped: the index keeps the newest two
        assert hub.get("invoices", "c3") == result("c3") and len(hub) == 2

    asyncio.run(scenario())


def test_hub_streams_filter_overflow_and_end():
    async def scenario():
        hub = ResultHub(capacity=10)
        everything = hub.subscribe("invoices", None)
        one = hub.subscribe("invoices", "inv-2")
        hub.dispatch(
            [("invoices", result("a", "inv-1")), ("invoices", result("b", "inv-2")), ("other", result("c", "inv-2"))]
        )
        got = [everything.queue.get_nowait() for _ in range(2)]
        assert [item.command_id for item in got if item] == ["a", "b"]
        only = one.queue.get_nowait()
        assert only is not None and only.command_id == "b" and one.queue.empty()
        hub.dispatch([("invoices", result(f"x{i}", "inv-1")) for i in range(1001)])
        assert everything.overflowed and everything.queue.qsize() == 1000
        hub.close_streams()
        assert one.queue.get_nowait() is None
        hub.unsubscribe(one)
        hub.unsubscribe(everything)

    asyncio.run(scenario())


# -- auth --------------------------------------------------------------------------------------------------
def test_bearer_auth_guards_all_but_probes_and_metrics():
    async def hello(request):
        return PlainTextResponse("hello")

    app = Starlette(routes=[Route(p, hello) for p in ("/x", "/healthz", "/readyz", "/metrics")])

    async def scenario():
        def client(token):
            return httpx.AsyncClient(transport=httpx.ASGITransport(BearerAuth(app, token)), base_url="http://t")

        async with client("t0ken") as c:
            assert (await c.get("/x")).status_code == 401
            r = await c.get("/x", headers={"Authorization": "Bearer nope"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
            assert (await c.get("/x", headers={"Authorization": "bearer t0ken"})).text == "hello"
            for path in ("/healthz", "/readyz", "/metrics"):
                assert (await c.get(path)).status_code == 200
        async with client("") as c:  # no token: open
            assert (await c.get("/x")).status_code == 200

    asyncio.run(scenario())


# -- OpenAPI ---------------------------------------------------------------------------------------------------
def test_openapi_describes_every_route_and_payload():
    doc = openapi_document({"invoices": AggregateSpec(Invoices())}, ["invoice-list"], auth=True)
    assert doc["security"] == [{"bearer": []}]
    schemas = doc["components"]["schemas"]
    create = schemas["Payload.invoices.CreateInvoice"]
    assert create["properties"]["issue_date"] == {"type": "string", "format": "date"}
    assert schemas["Payload.invoices.AddLineItem"]["properties"]["unit_price"]["type"] == "string"
    assert schemas["Payload.invoices.DeleteInvoice"].get("required") is None
    assert doc["paths"]["/views/{view}/rows"]["get"]["parameters"][0]["schema"]["enum"] == ["invoice-list"]
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    for path in doc["paths"].values():
        for operation in path.values():
            assert operation["responses"] and operation["operationId"]


# -- view queries ----------------------------------------------------------------------------------------------
def test_view_queries_are_parsed_and_checked():
    views = ViewService("sqlite:///unused.db", {"invoice-list": "invoices"}, opener=lambda url: None)
    q = views.parse_query(
        "invoice-list",
        {
            "customer": "ACME",
            "limit": "5",
            "offset": "10",
            "order_by": "-total",
            "aggregate_id": "inv-1",
            "min_version": "3",
            "timeout": "2",
        },
    )
    assert q.filters == {"customer": "ACME", "aggregate_id": "inv-1"}
    assert (q.limit, q.offset, q.order_by, q.min_version, q.timeout) == (5, 10, "-total", 3, 2.0)
    with pytest.raises(NotFound):
        views.parse_query("nope", {})
    for bad in (
        {"limit": "0"},
        {"limit": "x"},
        {"offset": "-1"},
        {"min_version": "3"},
        {"aggregate_id": "a", "min_version": "-1"},
        {"timeout": "0"},
        {"timeout": "1e9"},
    ):
        with pytest.raises(BadRequest):
            views.parse_query("invoice-list", bad)
    with pytest.raises(BadRequest):
        views.parse_query("invoice-list", {"aggregate_id": "a", "min_version": "1"}, allow_wait=False)
    views._executor.shutdown()
