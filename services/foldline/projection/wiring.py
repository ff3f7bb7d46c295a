"""Build a projector from settings: its store, its consumer. The projector's only wiring."""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Consumer, KafkaException

from foldline.clients import projector_consumer_config, verify_access
from foldline.errors import ConfigurationError
from foldline.outage import KafkaWatch
from foldline.projection.api import ProjectionSpec
from foldline.projection.base import SqlStore
from foldline.projection.engine import Projector, SwitchInfo
from foldline.projection.target import open_store
from foldline.settings import ProjectorSettings
from foldline.topics import projector_group


def build_projector(
    spec: ProjectionSpec,
    settings: ProjectorSettings,
    *,
    store: SqlStore | None = None,
    on_switch: Callable[[SwitchInfo], None] | None = None,
) -> Projector:
    group = projector_group(spec.aggregate, spec.view, spec.revision)
    # The consumer reports "all brokers down" through error_cb, in the projector's own thread (inside consume).
    watch = KafkaWatch(f"projector {spec.aggregate}/{spec.view}")

    def new_consumer(protocol: str) -> Consumer:
        try:
            return Consumer({**projector_consumer_config(settings.kafka, group, protocol), "error_cb": watch.on_error})
        except KafkaException as exc:
            raise ConfigurationError(f"invalid Kafka client settings: {exc}") from exc

    verify_access(settings.kafka)  # a refused login stops here, with the broker's reason
    owns_store = store is None
    store = store or open_store(settings.database, pool_size=settings.pool_size)
    return Projector(
        spec,
        settings,
        store=store,
        consumer_factory=new_consumer,
        on_switch=on_switch,
        owns_store=owns_store,
        watch=watch,
    )
