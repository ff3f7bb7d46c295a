"""The projector's lag is unknown until the end of every assigned partition is known.

Right after an assignment the consumer has fetched from some partitions only; their ends were read as
"0 behind", so a projector that had caught up with one partition said it had caught up with all.
"""

from __future__ import annotations

from typing import cast

from confluent_kafka import Consumer, TopicPartition

from foldline.projection import load_projection
from foldline.projection.engine import Projector
from foldline.projection.target import open_store
from foldline.settings import KafkaSettings, ProjectorSettings

UNKNOWN = -1001  # what confluent-kafka returns for an offset the client has not learned yet


class Watermarks:
    """A consumer that only answers ``get_watermark_offsets`` (cached), from a table the test edits."""

    def __init__(self) -> None:
        self.ends: dict[int, tuple[int, int]] = {}

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        assert cached, "the projector must not ask the broker from its loop"
        return self.ends.get(tp.partition, (UNKNOWN, UNKNOWN))


def projector(tmp_path) -> tuple[Projector, Watermarks]:
    spec = load_projection("foldline.examples.invoices.views:InvoiceList", aggregate_name="inv-lag")
    settings = ProjectorSettings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:9"), database="sqlite://")
    consumer = Watermarks()
    store = open_store(f"sqlite:///{tmp_path / 'views.db'}")
    return Projector(spec, settings, store=store, consumer_factory=lambda protocol: cast(Consumer, consumer)), consumer


def test_lag_is_unknown_until_every_assigned_partition_has_an_end(tmp_path):
    p, consumer = projector(tmp_path)
    try:
        p.state = "active"
        p.assigned.update({0, 1})
        p.positions[0] = 3
        consumer.ends[0] = (0, 3)  # partition 0 fetched and projected to its end; partition 1 not fetched yet
        p._update_lag()
        assert p.lag() is None

        consumer.ends[1] = (0, 7)
        p._next_lag = 0.0
        p._update_lag()
        assert p.lag() == 7  # nothing of partition 1 projected: it counts from its start

        p.positions[1] = 7
        p._next_lag = 0.0
        p._update_lag()
        assert p.lag() == 0
    finally:
        p.store.close()
