"""Engines whose Kafka clients cannot reach a broker that new clients reach: they replace them.

After the one broker of the outage tests came back, librdkafka clients now and then never connected to it
again (no thread for it any more), while a new client reached it at once: a projector stayed not-ready for
minutes. Here the engines' first clients are made with a bootstrap address nothing listens on - stranded
from the start - while their settings (which a new client uses) name the real broker.
"""

from __future__ import annotations

import threading
import uuid

import pytest

from foldline import clients, outage
from foldline.aggregate import AggregateSpec
from foldline.handler import wiring as handler_wiring
from foldline.handler.wiring import build_command_handler
from foldline.projection import load_projection
from foldline.projection import wiring as projection_wiring
from foldline.projection.wiring import build_projector
from foldline.settings import HandlerSettings, KafkaSettings, ProjectorSettings
from foldline.topics import TopicNames
from tests.faults_support import wait_until
from tests.integration.test_exactly_once import assert_exactly_once, workload
from tests.kafka_support import send, wait_for_results

pytestmark = [pytest.mark.kafka]

NOWHERE = "127.0.0.1:9"  # the discard port: nothing listens there


class Strand:
    """Wraps a config function of ``foldline.clients``: while ``on``, the clients it configures go nowhere."""

    def __init__(self) -> None:
        self.on = True
        self.made = 0

    def __call__(self, config_function):
        def configured(*args, **kwargs):
            config = config_function(*args, **kwargs)
            if self.on:
                self.made += 1
                config = {**config, "bootstrap.servers": NOWHERE}
            return config

        return configured


def test_a_handler_whose_clients_are_stranded_rebuilds_them(kafka_bootstrap, invoices_aggregate, tmp_path, monkeypatch):
    strand = Strand()
    for name in ("group_member_config", "transactional_producer_config", "restore_consumer_config"):
        monkeypatch.setattr(handler_wiring, name, strand(getattr(clients, name)))
    cls = invoices_aggregate(partitions=2)
    settings = HandlerSettings(
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap),
        state_dir=tmp_path / "state",
        instance_id=uuid.uuid4().hex[:8],
        commit_interval_ms=20,
    )
    handler = build_command_handler(AggregateSpec(cls()), settings)
    thread = threading.Thread(target=handler.run, daemon=True)
    thread.start()
    try:
        # init_transactions times out on a producer that reaches nothing: the handler waits for the broker.
        wait_until(lambda: not handler.watch.up, 120, "the stranded handler to see Kafka away")
        assert strand.made >= 3 and not handler.ready()
        strand.on = False  # clients made from now on reach the broker, as new clients did in the outage tests
        cmds = workload(10, 3, prefix=f"st-{uuid.uuid4().hex[:6]}")
        send(kafka_bootstrap, TopicNames(cls.name).commands, cmds)
        wait_for_results(kafka_bootstrap, cls.name, len(cmds), timeout=180)
        wait_until(handler.ready, 60, "the handler to be ready")
        assert_exactly_once(kafka_bootstrap, cls, cmds)
    finally:
        handler.stop()
        thread.join(60)


def test_a_projector_whose_consumer_is_stranded_replaces_it(
    kafka_bootstrap, invoices_aggregate, run_handler, tmp_path, monkeypatch
):
    strand = Strand()
    monkeypatch.setattr(projection_wiring, "projector_consumer_config", strand(clients.projector_consumer_config))
    monkeypatch.setattr(outage, "STRANDED_S", 1.0)
    cls = invoices_aggregate(partitions=2)
    run_handler(cls())
    cmds = workload(10, 3, prefix=f"sp-{uuid.uuid4().hex[:6]}")
    send(kafka_bootstrap, TopicNames(cls.name).commands, cmds)
    wait_for_results(kafka_bootstrap, cls.name, len(cmds))

    spec = load_projection("foldline.examples.invoices.views:InvoiceList", aggregate_name=cls.name)
    database = f"sqlite:///{tmp_path / 'views.db'}"
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    projector = build_projector(spec, ProjectorSettings(kafka=kafka, database=database, batch_wait_ms=20))
    thread = threading.Thread(target=projector.run, daemon=True)
    thread.start()
    try:
        # Quiet for 5 s, then its own metadata request goes unanswered: Kafka away, as far as it can tell.
        wait_until(lambda: not projector.watch.up, 60, "the stranded projector to see Kafka away")
        assert strand.made >= 1 and not projector.ready()
        strand.on = False
        wait_until(projector.ready, 120, "the projector to be ready with a new consumer")
        wait_until(lambda: projector.lag() == 0 and sum(projector.positions.values()) > 0, 60, "the view to catch up")
        rows = projector.store.read_rows("invoice-list", filters={}, limit=100)
        assert {row["id"] for row in rows} == {c.aggregate_id for c in cmds}
    finally:
        projector.stop()
        thread.join(60)
