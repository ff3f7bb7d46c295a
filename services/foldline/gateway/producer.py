"""The gateway's command producer: idempotent, murmur2 (as Java clients), keyed by the aggregate id.

Every call to the librdkafka producer runs on the event loop's thread: ``produce`` from the request,
and ``poll(0)`` from a timer every ``POLL_INTERVAL_S``, so delivery reports run as plain loop callbacks.
A polling thread cost ~30 µs of CPU per command (a GIL hand-over and a ``call_soon_threadsafe`` wakeup
per report) and broke the rule that one thread owns a client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from foldline.clients import command_producer_config
from foldline.errors import BrokerUnavailableError, ConfigurationError
from foldline.gateway.errors import Unavailable
from foldline.settings import KafkaSettings

log = structlog.get_logger("foldline.gateway.producer")

#: How often the loop serves delivery reports: ``send`` learns of its acknowledgement at most this late.
POLL_INTERVAL_S = 0.005


class CommandProducer:
    def __init__(self, kafka: KafkaSettings, *, linger_ms: int = 5) -> None:
        try:
            self._producer = Producer(command_producer_config(kafka, linger_ms))
        except KafkaException as exc:
            raise ConfigurationError(f"invalid Kafka producer settings: {exc}") from exc
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve delivery reports on ``loop`` (call it on the loop's thread)."""
        self._loop = loop
        self._timer = loop.call_later(POLL_INTERVAL_S, self._poll)

    def _poll(self) -> None:
        assert self._loop is not None
        try:
            self._producer.poll(0)
        except Exception:  # a delivery callback that raised: log it, keep serving the others
            log.exception("delivery report failed")
        self._timer = self._loop.call_later(POLL_INTERVAL_S, self._poll)

    async def stop(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout``), on the loop's thread like every other call."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = time.monotonic() + timeout
        while len(self._producer) and time.monotonic() < deadline:
            self._producer.poll(0)
            await asyncio.sleep(POLL_INTERVAL_S)
        self._producer.poll(0)
        remaining = len(self._producer)
        if remaining:
            log.warning("commands not delivered at shutdown", count=remaining)

    async def send(self, topic: str, key: str, value: bytes) -> None:
        """Produce one record and wait for the broker's acknowledgement."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._produce(topic, key, value, lambda error, msg: _settle(future, error))
        await future

    def send_nowait(self, topic: str, key: str, value: bytes, waiter: asyncio.Future[Any]) -> None:
        """Produce one record without waiting for the broker: only a failed delivery touches ``waiter``
        (it fails with 503). Used when the caller awaits the command's result anyway."""

        def delivered(error: KafkaError | None, msg: Message) -> None:
            if error is not None:
                _settle(waiter, error)

        self._produce(topic, key, value, delivered)

    def _produce(
        self,
        topic: str,
        key: str,
        value: bytes,
        delivered: Callable[[KafkaError | None, Message], None],
    ) -> None:
        try:
            self._producer.produce(topic, value, key.encode(), on_delivery=delivered)
        except BufferError as exc:
            raise Unavailable("the gateway's producer queue is full; retry shortly") from exc
        except KafkaException as exc:
            raise Unavailable(f"cannot produce to {topic}: {exc}") from exc


def _settle(future: asyncio.Future[Any], error: KafkaError | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        cause = BrokerUnavailableError(f"delivery failed: {error.str()}")
        failure = Unavailable(f"the command could not be written to Kafka: {error.str()}")
        failure.__cause__ = cause
        future.set_exception(failure)
