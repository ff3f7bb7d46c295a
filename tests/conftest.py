"""Session-scoped real services and factory fixtures for unique topics and groups.

Kafka is the real broker started by ``foldline.dev.kafka`` (or ``FOLDLINE_KAFKA_BOOTSTRAP`` when set).
If it cannot start, the tests that need it fail: there is no fake to fall back to.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from foldline.aggregate import AggregateSpec
from foldline.examples.invoices import Invoices
from foldline.topics import aggregate_topics, ensure_topics

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    preset = os.environ.get("FOLDLINE_KAFKA_BOOTSTRAP")
    if preset:
        yield preset
        return
    from foldline.dev.kafka import DevKafka

    broker = DevKafka()
    started_here = not broker.is_running()
    bootstrap = broker.start()
    yield bootstrap
    if started_here and not os.environ.get("FOLDLINE_KEEP_KAFKA"):
        broker.stop()


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Names no other test uses: topics and consumer groups never collide between tests or runs."""

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture
def invoices_aggregate(kafka_admin: AdminClient, unique_name: Callable[[str], str]) -> Callable[..., type[Invoices]]:
    """Make an Invoices aggregate under a unique name, with its topics created on the real broker.

    The class is registered in this module so a handler child process can import it by path
    (``tests.conftest:<name>``) - see ``aggregate_path``.
    """

    def make(partitions: int = 3) -> type[Invoices]:
        name = unique_name("inv")
        cls = type(f"Invoices_{name.replace('-', '_')}", (Invoices,), {"name": name})
        ensure_topics(kafka_admin, aggregate_topics(name, partitions))
        AggregateSpec(cls())  # fail early on a bad definition
        return cls

    return make


def aggregate_path(cls: type[Invoices]) -> str:
    """An import path a child process can load: the invoices class with the name taken from env."""
    return f"tests.named_invoices:{cls.name.replace('-', '_')}"
