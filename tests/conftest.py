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


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The real PostgreSQL server of ``foldline.dev.postgres`` (started if needed, never stopped here).

    If it cannot start, the tests that need it fail: there is no fake to fall back to.
    """
    from foldline.dev.postgres import DevPostgres

    return DevPostgres().start()


@pytest.fixture
def postgres_url(postgres_dsn: str, unique_name: Callable[[str], str]) -> Iterator[str]:
    """A projection database URL on the real server with a schema of its own, dropped afterwards."""
    import psycopg

    schema = unique_name("views").replace("-", "_")
    yield f"{postgres_dsn}?schema={schema}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def invoice_history(kafka_bootstrap: str) -> Callable[[type[Invoices]], dict[str, tuple[object, int, list[object]]]]:
    """Read an invoices aggregate's whole events topic and fold it per aggregate:
    ``{aggregate_id: (state, version, decoded events)}`` - what every view must agree with."""
    from foldline.records import EventRecord
    from foldline.topics import TopicNames
    from tests.kafka_support import read_topic

    def fold(cls: type[Invoices]) -> dict[str, tuple[object, int, list[object]]]:
        spec = AggregateSpec(cls())
        records: dict[str, list[EventRecord]] = {}
        for msg in read_topic(kafka_bootstrap, TopicNames(cls.name).events):
            record = EventRecord.from_bytes(msg.value())
            records.setdefault(record.aggregate_id, []).append(record)
        out: dict[str, tuple[object, int, list[object]]] = {}
        for aggregate_id, recs in records.items():
            assert [r.version for r in recs] == list(range(1, len(recs) + 1)), f"{aggregate_id}: gaps in events"
            events = [spec.decode_event(r.type, r.schema_version, r.payload) for r in recs]
            out[aggregate_id] = (spec.aggregate.fold(events), len(recs), events)
        return out

    return fold


@pytest.fixture
def start_projector(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Callable[..., object]]:
    """Run ``foldline projector`` as a real child process; every one still alive is stopped afterwards."""
    import subprocess
    import sys

    started: list[subprocess.Popen[bytes]] = []

    def start(
        projection: str, database: str, *, aggregate_name: str, name: str, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "FOLDLINE_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "FOLDLINE_HTTP_PORT": "0",
            "FOLDLINE_LOG_FORMAT": "json",
            "FOLDLINE_INSTANCE_ID": name,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            **(extra_env or {}),
        }
        log = (tmp_path / f"projector-{name}.log").open("ab")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "foldline.cli",
                "projector",
                "--projection",
                projection,
                "--database",
                database,
                "--aggregate-name",
                aggregate_name,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
    for proc in started:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
