"""Wiring: build the Kafka clients, stores and engines from settings. The only place that does so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer

from foldline.aggregate import AggregateSpec
from foldline.errors import ConfigurationError
from foldline.handler.engine import CommandHandler, handler_group
from foldline.settings import HandlerSettings, KafkaSettings
from foldline.store.base import StateStore, open_state_store


def consumer_config(kafka: KafkaSettings, group: str, protocol: str, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        **kafka.client_config(),
        "group.id": group,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "queued.max.messages.kbytes": 16_384,  # prefetch per partition: bounds memory, still ample
    }
    if protocol == "consumer":
        config["group.protocol"] = "consumer"  # KIP-848: the broker assigns, incrementally
    else:
        config["partition.assignment.strategy"] = "cooperative-sticky"
        config["session.timeout.ms"] = 10_000
        config["heartbeat.interval.ms"] = 1_000
    config.update(extra)
    return config


def transactional_producer_config(kafka: KafkaSettings, transactional_id: str) -> dict[str, Any]:
    return {
        **kafka.client_config(),
        "transactional.id": transactional_id,
        # As Kafka Streams under EOS: a crashed handler's open transaction is aborted within seconds.
        "transaction.timeout.ms": 10_000,
        # The coordinator answers CONCURRENT_TRANSACTIONS while the previous commit's markers are being
        # written; the default 100 ms retry backoff then lands on every such batch's latency.
        "retry.backoff.ms": 5,
        "retry.backoff.max.ms": 50,
        "linger.ms": 2,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 500_000,
        "partitioner": "murmur2_random",
    }


def restore_consumer_config(kafka: KafkaSettings, group: str) -> dict[str, Any]:
    return {
        **kafka.client_config(),
        "group.id": group + ".restore",  # never joins or commits: partitions are assigned by hand
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "fetch.max.bytes": 64 << 20,
        "max.partition.fetch.bytes": 16 << 20,
    }


def build_command_handler(spec: AggregateSpec, settings: HandlerSettings) -> CommandHandler:
    group = handler_group(spec.name)
    state_root = Path(settings.state_dir) / spec.name

    def new_consumer(protocol: str) -> Consumer:
        return Consumer(consumer_config(settings.kafka, group, protocol))

    def new_store(partition: int) -> StateStore:
        return open_state_store(settings.store, state_root / f"partition-{partition}")

    try:
        producer = Producer(transactional_producer_config(
            settings.kafka, f"foldline.{spec.name}.{settings.instance_id}"))
        restore = Consumer(restore_consumer_config(settings.kafka, group))
    except KafkaException as exc:
        raise ConfigurationError(f"invalid Kafka client settings: {exc}") from exc
    return CommandHandler(spec, settings, consumer_factory=new_consumer, producer=producer,
                          restore_consumer=restore, open_partition_store=new_store)
