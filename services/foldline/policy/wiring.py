"""Build a policy worker from settings: its Kafka clients and its stores. The worker's only wiring."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer

from foldline.clients import group_member_config, restore_consumer_config, transactional_producer_config
from foldline.errors import ConfigurationError
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

    def new_consumer(protocol: str) -> Consumer:
        return Consumer(group_member_config(settings.kafka, group, protocol))

    def new_store(source: str, partition: int) -> StateStore:
        return open_state_store(settings.store, state_root / source / f"partition-{partition}")

    try:
        producer = Producer(
            transactional_producer_config(settings.kafka, f"foldline.policy.{spec.name}.{settings.instance_id}")
        )
        restore = Consumer(restore_consumer_config(settings.kafka, policy_restore_group(spec.name)))
    except KafkaException as exc:
        raise ConfigurationError(f"invalid Kafka client settings: {exc}") from exc
    return PolicyWorker(
        spec,
        settings,
        consumer_factory=new_consumer,
        producer=producer,
        restore_consumer=restore,
        open_partition_store=new_store,
        clock=clock,
    )
