"""Build a projector from settings: its store, its consumer. The projector's only wiring."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException

from foldline.errors import ConfigurationError
from foldline.projection.api import ProjectionSpec
from foldline.projection.base import SqlStore
from foldline.projection.engine import Projector, SwitchInfo
from foldline.projection.target import open_store
from foldline.settings import KafkaSettings, ProjectorSettings
from foldline.wiring import consumer_config


def projector_group(spec: ProjectionSpec) -> str:
    """The consumer group of one view revision: used to share partitions, never to commit offsets."""
    return f"foldline.{spec.aggregate}.projection.{spec.view}.r{spec.revision}"


def projector_consumer_config(kafka: KafkaSettings, group: str, protocol: str) -> dict[str, Any]:
    return consumer_config(kafka, group, protocol, **{
        "fetch.max.bytes": 64 << 20,
        "max.partition.fetch.bytes": 8 << 20,
        "queued.max.messages.kbytes": 128 << 10,
    })


def build_projector(spec: ProjectionSpec, settings: ProjectorSettings, *, store: SqlStore | None = None,
                    on_switch: Callable[[SwitchInfo], None] | None = None) -> Projector:
    group = projector_group(spec)

    def new_consumer(protocol: str) -> Consumer:
        try:
            return Consumer(projector_consumer_config(settings.kafka, group, protocol))
        except KafkaException as exc:
            raise ConfigurationError(f"invalid Kafka client settings: {exc}") from exc

    owns_store = store is None
    store = store or open_store(settings.database, pool_size=settings.pool_size)
    return Projector(spec, settings, store=store, consumer_factory=new_consumer, on_switch=on_switch,
                     owns_store=owns_store)
