"""The operator's Kafka side: topics through ``foldline.topics``, consumer-group lag, admin clients.

Calls block (confluent-kafka futures); the kopf handlers that use them run in worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from foldline.errors import BrokerUnavailableError, ConfigurationError, KafkaAuthenticationError
from foldline.settings import KafkaSettings
from foldline.topics import TopicReport, TopicSpec, delete_topics, describe_partitions, ensure_topics, progress
from foldline_operator.builders import KAFKA_CA_KEY


def client_config(bootstrap: str, secret: Mapping[str, str] | None) -> dict[str, str]:
    """librdkafka settings from the resource's bootstrap servers and its (decoded) Secret.

    Built by ``foldline.settings.KafkaSettings``, as in the pods (which get the same keys as env vars): the
    same defaults (SCRAM-SHA-512) and the same refusals (``ConfigurationError``, naming keys, never values).
    The CA comes inline (``ssl.ca.pem``): the operator has no file of it.
    """
    secret = secret or {}
    settings = KafkaSettings(
        bootstrap_servers=bootstrap,
        security_protocol=secret.get("security.protocol", "plaintext").strip().lower() or "plaintext",
        sasl_mechanism=secret.get("sasl.mechanism", "").strip().upper(),
        sasl_username=secret.get("sasl.username", "").strip(),
        sasl_password=secret.get("sasl.password", "").strip(),
    )
    ca = secret.get(KAFKA_CA_KEY, "").strip()
    if ca and settings.security_protocol not in ("ssl", "sasl_ssl"):
        raise ConfigurationError(f"{KAFKA_CA_KEY} is set but security.protocol is {settings.security_protocol}")
    settings.check()
    config = {k: str(v) for k, v in settings.client_config().items()}
    if ca:
        config["ssl.ca.pem"] = ca
    return config


class KafkaPort:
    """Admin clients, one per distinct connection config, reused across reconciliations."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._clients: dict[tuple[tuple[str, str], ...], AdminClient] = {}
        self._refused: dict[tuple[tuple[str, str], ...], str] = {}  # librdkafka's reason, never a secret
        self._lock = threading.Lock()

    def admin(self, config: Mapping[str, str]) -> AdminClient:
        key = tuple(sorted(config.items()))
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                # librdkafka's own log lines (a refused connection every few ms while a broker is away)
                # stay quiet: failures reach the resource's conditions through the calls' exceptions.
                def refused(error: KafkaError, key: tuple[tuple[str, str], ...] = key) -> None:
                    if error.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL):
                        self._refused[key] = error.str()

                # Every call passes its own timeout too; these bound the requests and the TCP/TLS set-up
                # underneath (librdkafka's default set-up timeout is 30 s: a blackholed broker).
                settings: dict[str, Any] = {
                    **config,
                    "socket.timeout.ms": int(self.timeout * 1000),
                    "socket.connection.setup.timeout.ms": max(1000, int(self.timeout * 1000)),
                    "log_level": 2,
                    "error_cb": refused,
                }
                client = self._clients[key] = AdminClient(settings)
            return client

    def _refusal(self, config: Mapping[str, str], exc: BrokerUnavailableError) -> None:
        """Raise ``KafkaAuthenticationError`` if the broker refused this client's login or certificate.

        The refused client is dropped: the next pass (after the Secret is fixed, or not) starts afresh.
        """
        key = tuple(sorted(config.items()))
        with self._lock:
            client = self._clients.get(key)
        if client is not None:
            client.poll(0)  # serves error_cb
        with self._lock:
            reason = self._refused.pop(key, None)
            if reason is not None:
                self._clients.pop(key, None)
        if reason is not None:
            raise KafkaAuthenticationError(f"Kafka refused the operator's client: {reason}") from exc

    def ensure_topics(self, config: Mapping[str, str], specs: list[TopicSpec], *, allow_growth: bool) -> TopicReport:
        """As ``foldline.topics.ensure_topics``; a refused login is ``KafkaAuthenticationError``."""
        try:
            return ensure_topics(self.admin(config), specs, allow_partition_growth=allow_growth, timeout=self.timeout)
        except BrokerUnavailableError as exc:
            self._refusal(config, exc)
            raise

    def partitions(self, config: Mapping[str, str], names: Iterable[str]) -> dict[str, int]:
        return describe_partitions(self.admin(config), names, self.timeout)

    def delete_topics(self, config: Mapping[str, str], names: Iterable[str]) -> list[str]:
        return delete_topics(self.admin(config), names, self.timeout)

    def offsets(self, config: Mapping[str, str], topic: str) -> dict[int, tuple[int, int]]:
        """(earliest, latest read_committed) offsets per partition of ``topic``, as
        ``foldline.projection.status.EndOffsets`` gives them; ``BrokerUnavailableError`` when absent."""
        admin = self.admin(config)
        count = describe_partitions(admin, [topic], self.timeout).get(topic)
        if count is None:
            raise BrokerUnavailableError(f"topic {topic} does not exist")
        tps = [TopicPartition(topic, p) for p in range(count)]
        try:
            starts = self._offsets(admin, tps, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
            ends = self._offsets(admin, tps, OffsetSpec.latest())  # type: ignore[no-untyped-call]
        except KafkaException as exc:
            raise BrokerUnavailableError(f"cannot read the offsets of {topic}: {exc}") from exc
        return {p: (starts[p], ends[p]) for p in range(count)}

    def group_lag(self, config: Mapping[str, str], group: str, topic: str) -> int:
        """Records of ``topic`` that ``group`` has not committed (from the start where it committed none)."""
        ends = self.offsets(config, topic)
        request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in ends])]
        try:
            result = self.admin(config).list_consumer_group_offsets(
                request, require_stable=True, request_timeout=self.timeout
            )
            committed = {tp.partition: tp.offset for tp in result[group].result(self.timeout).topic_partitions}
        except KafkaException as exc:
            raise BrokerUnavailableError(f"cannot read the offsets of group {group}: {exc}") from exc
        behind, _ = progress({p: o for p, o in committed.items() if o >= 0}, ends)
        return behind

    def _offsets(self, admin: AdminClient, tps: list[TopicPartition], spec: Any) -> dict[int, int]:
        futures = admin.list_offsets(
            {tp: spec for tp in tps}, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=self.timeout
        )
        return {tp.partition: int(f.result(self.timeout).offset) for tp, f in futures.items()}
