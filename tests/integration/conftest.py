from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from foldline.aggregate import Aggregate, AggregateSpec
from foldline.gateway import Gateway, GatewayServer
from foldline.gateway.views import ViewService
from foldline.handler.engine import CommandHandler
from foldline.handler.wiring import build_command_handler
from foldline.projection import load_projection, open_target
from foldline.projection.wiring import build_projector
from foldline.settings import GatewaySettings, HandlerSettings, KafkaSettings, ProjectorSettings

pytestmark = pytest.mark.kafka


@pytest.fixture
def run_handler(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Callable[..., CommandHandler]]:
    """Start a command handler in a thread of this process; all are stopped at the end of the test."""
    running: list[tuple[CommandHandler, threading.Thread]] = []

    def start(
        aggregate: Aggregate, *, state_dir: Path | None = None, store: str = HandlerSettings.store, **overrides: object
    ) -> CommandHandler:
        settings = HandlerSettings(
            kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap),
            state_dir=state_dir or tmp_path / "state",
            store=store,
            instance_id=uuid.uuid4().hex[:8],
            commit_interval_ms=20,
        ).with_changes(**overrides)
        handler = build_command_handler(AggregateSpec(aggregate), settings)
        thread = threading.Thread(target=handler.run, daemon=True)
        thread.start()
        running.append((handler, thread))
        return handler

    yield start
    for handler, _ in running:
        handler.stop()
    for _, thread in running:
        thread.join(60)


def gateway_settings(bootstrap: str, **changes) -> GatewaySettings:
    return GatewaySettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        host="127.0.0.1",
        command_timeout_s=5.0,
        max_command_timeout_s=10.0,
        read_timeout_s=0.5,
        max_read_timeout_s=2.0,
    ).with_changes(**changes)


@pytest.fixture
def hostile_stack(kafka_bootstrap, invoices_aggregate, run_handler, postgres_url):
    """Handler, an InvoiceList projector into PostgreSQL, and a gateway serving both; yields a factory that
    starts the gateway with settings changes (a stack per test, started once)."""
    cls = invoices_aggregate(partitions=2)
    run_handler(cls(), commit_interval_ms=5)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    spec = load_projection("foldline.examples.invoices.views:InvoiceList", aggregate_name=cls.name)
    projector = build_projector(spec, ProjectorSettings(kafka=kafka, database=postgres_url, batch_wait_ms=5))
    thread = threading.Thread(target=projector.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not projector.ready():
        assert time.monotonic() < deadline, "the projector did not become ready"
        time.sleep(0.05)
    servers: list[GatewayServer] = []

    def start(**changes) -> tuple[str, httpx.Client, GatewayServer]:
        views = ViewService(postgres_url, {"invoice-list": cls.name}, opener=open_target)
        gateway = Gateway([AggregateSpec(cls())], gateway_settings(kafka_bootstrap, **changes), views)
        server = GatewayServer(gateway).start()
        servers.append(server)
        return cls.name, httpx.Client(base_url=server.url, timeout=30), server

    yield start
    for server in servers:
        server.stop()
    projector.stop()
    thread.join(30)
