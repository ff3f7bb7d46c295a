"""The gateway's command producer: idempotent, murmur2 (as Java clients), keyed by the aggregate id.

``send`` is awaited on the event loop; a daemon thread polls librdkafka so delivery reports resolve
the futures through ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from foldline.clients import command_producer_config
from foldline.errors import BrokerUnavailableError, ConfigurationError
from foldline.gateway.errors import Unavailable
from foldline.settings import KafkaSettings

log = structlog.get_logger("foldline.gateway.producer")


class CommandProducer:
    def __init__(self, kafka: KafkaSettings, *, linger_ms: int = 1) -> None:
        try:
            self._producer = Producer(command_producer_config(kafka, linger_ms))
        except KafkaException as exc:
            raise ConfigurationError(f"invalid Kafka producer settings: {exc}") from exc
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="foldline-gateway-producer", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        remaining = self._producer.flush(timeout)
        if remaining:
            log.warning("commands not delivered at shutdown", count=remaining)

    async def send(self, topic: str, key: str, value: bytes) -> None:
        """Produce one record and wait for the broker's acknowledgement."""
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def delivered(error: KafkaError | None, msg: Message) -> None:
            loop.call_soon_threadsafe(_settle, future, error)

        self._produce(topic, key, value, delivered)
        await future

    def send_nowait(self, topic: str, key: str, value: bytes, waiter: asyncio.Future[Any]) -> None:
        """Produce one record without waiting for the broker: only a failed delivery touches ``waiter``
        (it fails with 503). Used when the caller awaits the command's result anyway, which saves one
        hop from the delivery thread to the loop per command."""
        loop = self._loop or asyncio.get_running_loop()

        def delivered(error: KafkaError | None, msg: Message) -> None:
            if error is not None:
                loop.call_soon_threadsafe(_settle, waiter, error)

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
