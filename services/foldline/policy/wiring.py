"""Build a policy worker from settings: its Kafka clients and its stores. The worker's only wiring."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer

from foldline.clients import group_member_config, restore_consumer_config, transactional_producer_config
from foldline.errors import ConfigurationError
from foldline.outage import KafkaWatch
from foldline.policies import PolicySpec
from foldline.policy.engine import PolicyWorker
from foldline.settings import PolicySettings
from foldline.store.base import StateStore, open_state_store
from foldline.topics import policy_group, policy_restore_group


def build_policy_worker(
    spec: PolicySpec, settings: PolicySettings, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> PolicyWorker:
    """``clock`` tells deadlines the time: the wall clock, or a test's own."""
    group = policy_group(spec.name)
    state_root = Path(settings.state_dir) / "policy" / spec.name

    watch = KafkaWatch(f"policy {spec.name}")

    def new_consumer(protocol: str) -> Consumer:
        return Consumer({**group_member_config(settings.kafka, group, protocol), "error_cb": watch.on_error})

    def new_producer() -> Producer:
        return Producer(
            transactional_producer_config(settings.kafka, f"foldline.policy.{spec.name}.{settings.instance_id}")
        )

    def new_restore_consumer() -> Consumer:
        return Consumer(
            {**restore_consumer_config(settings.kafka, policy_restore_group(spec.name)), "error_cb": watch.on_error}
        )

    def new_store(source: str, partition: int) -> StateStore:
        return open_state_store(settings.store, state_root / source / f"partition-{partition}")

    try:
        return PolicyWorker(
            spec,
            settings,
            consumer_factory=new_consumer,
            producer_factory=new_producer,
            restore_consumer_factory=new_restore_consumer,
            open_partition_store=new_store,
            watch=watch,
            clock=clock,
        )
    except KafkaException as exc:
        raise ConfigurationError(f"invalid Kafka client settings: {exc}") from exc
