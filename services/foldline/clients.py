"""Every Kafka client foldline creates, configured in one place.

Each function returns the librdkafka settings of one kind of client, on top of the connection settings
that ``KafkaSettings.client_config`` holds (bootstrap servers, TLS, SASL). The names these clients use
(topics and consumer groups) are in ``foldline.topics``.
"""

from __future__ import annotations

from typing import Any

from foldline.settings import KafkaSettings


def group_member_config(kafka: KafkaSettings, group: str, protocol: str, **extra: Any) -> dict[str, Any]:
    """A consumer-group member that commits nothing itself (the engines store their positions)."""
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


def projector_consumer_config(kafka: KafkaSettings, group: str, protocol: str) -> dict[str, Any]:
    """A projector's group member: large fetches, since a rebuild replays a whole topic."""
    return group_member_config(
        kafka,
        group,
        protocol,
        **{
            "fetch.max.bytes": 64 << 20,
            "max.partition.fetch.bytes": 8 << 20,
            "queued.max.messages.kbytes": 128 << 10,
        },
    )


def transactional_producer_config(kafka: KafkaSettings, transactional_id: str) -> dict[str, Any]:
    """The command handler's producer: results, events and snapshots in one transaction per batch."""
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
    """Reads a snapshots partition into a local store; partitions are assigned by hand."""
    return {
        **kafka.client_config(),
        "group.id": group,  # never joins or commits; librdkafka wants an id anyway
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "fetch.max.bytes": 64 << 20,
        "max.partition.fetch.bytes": 16 << 20,
    }


def command_producer_config(kafka: KafkaSettings, linger_ms: int) -> dict[str, Any]:
    """The gateway's producer of commands: idempotent, murmur2 (as Java clients), keyed by aggregate id."""
    return {
        **kafka.client_config(),
        "enable.idempotence": True,  # acks=all, no duplicates or reordering on retries
        "partitioner": "murmur2_random",
        "linger.ms": linger_ms,
        "message.timeout.ms": 60_000,
        "queue.buffering.max.messages": 200_000,
    }


def results_reader_config(kafka: KafkaSettings, group: str) -> dict[str, Any]:
    """The gateway's reader of every results partition: assigned by hand, low fetch latency."""
    return {
        **kafka.client_config(),
        "group.id": group,  # never joins or commits; librdkafka wants an id anyway
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "fetch.wait.max.ms": 50,
        "fetch.min.bytes": 1,
    }


def reader_config(kafka: KafkaSettings, group: str) -> dict[str, Any]:
    """A short-lived reader that assigns partitions by hand or only asks for offsets (CLI, status)."""
    return {
        **kafka.client_config(),
        "group.id": group,
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    }


def dead_letter_reader_config(kafka: KafkaSettings, group: str) -> dict[str, Any]:
    """The gateway's short-lived reader of a dead-letter topic: assigned by hand, told where each
    partition ends, never committing."""
    return {
        **kafka.client_config(),
        "group.id": group,  # never joins or commits; librdkafka wants an id anyway
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "fetch.wait.max.ms": 50,
        "queued.max.messages.kbytes": 8_192,
    }
