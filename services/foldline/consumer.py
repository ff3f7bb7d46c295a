"""Taking batches from a consumer-group member; shared by the command handler and the projector."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from foldline.errors import KafkaFatalError

log = structlog.get_logger("foldline.consumer")

ConsumerFactory = Callable[[str], Consumer]
Rebalance = Callable[[Consumer, list[TopicPartition]], None]

# What a broker without KIP-848's consumer protocol answers when asked for it.
_NO_CONSUMER_PROTOCOL = (KafkaError.UNSUPPORTED_VERSION, KafkaError._UNSUPPORTED_FEATURE)


class ProtocolUnsupported(Exception):
    """The broker does not offer the KIP-848 consumer protocol; use the classic one."""


def initial_protocol(setting: str) -> str:
    """``auto`` starts with KIP-848 and falls back on ``ProtocolUnsupported``."""
    return "consumer" if setting == "auto" else setting


def take(consumer: Consumer, most: int, wait: float) -> list[Message]:
    """What the consumer has now, up to ``most`` (errors included), waiting at most ``wait`` for the first.

    ``consumer.consume(most, wait)`` returns only when ``most`` came or ``wait`` ran out: with fewer queued
    it waits the whole ``wait``.
    """
    first = consumer.consume(1, wait)
    return first + consumer.consume(most - 1, 0) if first and most > 1 else first


def take_batch(consumer: Consumer, max_batch: int, wait: float, *, may_fall_back: bool) -> list[Message]:
    """The records queued now, up to ``max_batch``, waiting at most ``wait`` seconds for the first.

    A batch never waits for more records than are there: an idle loop answers at once and a busy one gets
    big batches by itself. Non-fatal consumer errors are returned to nobody (librdkafka retries them);
    fatal ones raise ``KafkaFatalError``.
    """
    records = []
    for msg in take(consumer, max_batch, wait):
        error = msg.error()
        if error is None:
            records.append(msg)
        elif may_fall_back and error.code() in _NO_CONSUMER_PROTOCOL:
            raise ProtocolUnsupported(error.str())
        elif error.fatal() or error.code() == KafkaError._FATAL:
            # librdkafka hands the consumer's fatal error out as a _FATAL event whose fatal() is False: a
            # static member back before its predecessor's session ended, under KIP-848 (the broker answers
            # UNRELEASED_INSTANCE_ID), is one. The client is dead for good; only new clients help.
            raise KafkaFatalError(f"consumer failed: {error.str()}")
    return records


class GroupMember:
    """A consumer-group member subscribed to ``topics``, handing out batches.

    With the ``auto`` protocol setting it starts with KIP-848's consumer protocol and, when the broker
    does not offer it, closes that consumer and subscribes again with the classic protocol
    (cooperative-sticky) - the same for every engine, so none of them special-cases it.
    """

    def __init__(
        self,
        factory: ConsumerFactory,
        protocol: str,
        topics: list[str],
        *,
        on_assign: Rebalance,
        on_revoke: Rebalance,
        on_lost: Rebalance,
        on_fallback: Callable[[], Any] | None = None,
    ) -> None:
        self._factory = factory
        self._may_fall_back = protocol == "auto"
        self.protocol = initial_protocol(protocol)
        self._topics = topics
        self._callbacks = {"on_assign": on_assign, "on_revoke": on_revoke, "on_lost": on_lost}
        self._on_fallback = on_fallback
        self.consumer = factory(self.protocol)

    def subscribe(self) -> None:
        self.consumer.subscribe(self._topics, **self._callbacks)

    def renew(self) -> None:
        """Close this member (its partitions are revoked or lost through the callbacks) and make a new one,
        not yet subscribed: how an engine starts over after its client failed."""
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError) as exc:  # already closed, or failed beyond use: a new one follows
            log.info("closing the failed consumer", error=str(exc))
        self.consumer = self._factory(self.protocol)

    def next_batch(self, max_batch: int, wait: float) -> list[Message]:
        try:
            return take_batch(self.consumer, max_batch, wait, may_fall_back=self._may_fall_back)
        except ProtocolUnsupported:
            log.info("the broker does not offer KIP-848; using the classic protocol with cooperative-sticky")
            self.consumer.close()
            self._may_fall_back = False
            self.protocol = "classic"
            if self._on_fallback is not None:
                self._on_fallback()
            self.consumer = self._factory("classic")
            self.subscribe()
            return []
