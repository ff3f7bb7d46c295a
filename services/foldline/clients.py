"""Every Kafka client foldline creates, configured in one place.

Each function returns the librdkafka settings of one kind of client, on top of the connection settings
that ``KafkaSettings.client_config`` holds (bootstrap servers, TLS, SASL). The names these clients use
(topics and consumer groups) are in ``foldline.topics``.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from foldline.errors import ConfigurationError, KafkaAuthenticationError
from foldline.settings import SASL_MECHANISMS, KafkaSettings

log = structlog.get_logger("foldline.kafka")


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
        # written (a few ms): under steady load that is the next transaction's first request, often. The
        # default 100 ms backoff landed on each such batch's latency; a 5-50 ms exponential one still doubled
        # the AddOffsetsToTxn phase (p50 and p99, measured); 1-10 ms retries about as soon as the markers are in.
        "retry.backoff.ms": 1,
        "retry.backoff.max.ms": 10,
        "linger.ms": 2,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 500_000,
        "partitioner": "murmur2_random",
    }


def flush_producer(producer: Producer, timeout: float) -> int:
    """``producer.flush(timeout)``: the number of records still undelivered, or the producer's error.

    A fenced transactional producer has confluent-kafka raise its fatal error inside ``flush()`` and then run
    the next delivery callback with that exception pending, which Python reports as a ``SystemError`` caused
    by the ``KafkaException``. The engines handle a ``KafkaException`` (a fenced producer rejoins); an
    unexpected ``SystemError`` killed the process instead.
    """
    try:
        return int(producer.flush(timeout))
    except SystemError as exc:
        if isinstance(exc.__cause__, KafkaException):
            raise exc.__cause__ from exc
        raise


def discard(client: Producer | Consumer) -> None:
    """Let go of a failed client without waiting on the broker: purge a producer's queue, close a consumer."""
    try:
        if isinstance(client, Producer):
            client.purge()
            client.flush(0)
        else:
            client.close()
    except (KafkaException, RuntimeError) as exc:
        log.info("discarding a failed client", error=str(exc))


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


def standby_consumer_config(kafka: KafkaSettings, group: str) -> dict[str, Any]:
    """Keeps standby stores current: snapshots partitions assigned by hand, read as they are committed."""
    return {
        **restore_consumer_config(kafka, group),
        "enable.partition.eof": False,
        "auto.offset.reset": "earliest",  # a store's offset below the log start: from the start
        "queued.max.messages.kbytes": 16_384,  # prefetch per partition, as the group member's
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


# -- the start-up check -----------------------------------------------------------------------------------
#: librdkafka's errors for a login or certificate the broker (or this client) refused.
_REFUSALS = {KafkaError._AUTHENTICATION, KafkaError._SSL}


def check_access(kafka: KafkaSettings, timeout: float | None = None) -> bool:
    """Ask the broker for metadata with these settings: True when it answers, False when it stays out of
    reach for ``timeout`` (an outage: the caller goes on and its clients retry). A refusal raises
    ``KafkaAuthenticationError`` at once: a bad login is not an outage, and retrying would only hide it.

    A broker that hangs up during the handshake again and again for the whole ``timeout`` (a plaintext
    client on a TLS or SASL listener, or TLS without the SASL login the listener wants) counts as a
    refusal too. Messages come from librdkafka's errors, which name the broker and the mechanism, never a
    password.
    """
    timeout = kafka.connect_timeout_s if timeout is None else timeout
    errors: list[KafkaError] = []
    hangups: list[str] = []

    class _Log:
        def log(self, level: int, fmt: str, *args: Any) -> None:
            line = fmt % args if args else fmt
            if "closed by peer" in line:
                hangups.append(line)

    config: dict[str, Any] = {
        **kafka.client_config(),
        "error_cb": errors.append,
        "logger": _Log(),
        "log_level": 6,  # the "Disconnected ... closed by peer" lines are notices
        "socket.connection.setup.timeout.ms": max(1000, int(timeout * 1000)),
    }
    try:
        admin = AdminClient(config)
    except KafkaException as exc:  # e.g. an unreadable CA file
        raise ConfigurationError(f"invalid Kafka client settings: {exc}") from exc
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=min(1.0, max(deadline - time.monotonic(), 0.1)))
            return True
        except KafkaException:
            admin.poll(0)  # serves error_cb and the log callback
        refused = next((e for e in errors if e.code() in _REFUSALS), None)
        if refused is not None:
            raise KafkaAuthenticationError(
                f"Kafka at {kafka.bootstrap_servers} refused this client ({_who(kafka)}): {refused.str()}"
            )
        if time.monotonic() < deadline:
            continue
        if len(hangups) >= 3:  # for the whole wait, never an answer: not an outage (that refuses or times out)
            raise KafkaAuthenticationError(
                f"Kafka at {kafka.bootstrap_servers} hangs up during the handshake ({_who(kafka)}): the listener "
                "expects another security protocol or a login (or a proxy in front of it has no broker); "
                f"last: {hangups[-1].split(': ', 1)[-1]}"
            )
        return False


def verify_access(kafka: KafkaSettings) -> None:
    """What every process does before it creates its clients: a refused login stops it with
    ``KafkaAuthenticationError``; a broker out of reach is only logged (its clients retry)."""
    if not check_access(kafka):
        log.warning(
            "Kafka did not answer at start; the clients keep trying",
            bootstrap=kafka.bootstrap_servers,
            waited_s=kafka.connect_timeout_s,
        )


def _who(kafka: KafkaSettings) -> str:
    """The client's identity for messages: protocol, mechanism and user, never the password."""
    if kafka.uses_sasl:
        mechanism = kafka.sasl_mechanism or SASL_MECHANISMS[0]
        return f"{kafka.security_protocol}, {mechanism} as {kafka.sasl_username!r}"
    return kafka.security_protocol


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
