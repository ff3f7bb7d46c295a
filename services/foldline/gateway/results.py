"""The results reader: every replica reads ALL partitions of every ``<agg>.command-results`` topic.

No consumer group: partitions are assigned by hand, ``read_committed``, starting from a recent time
(``results_lookback_s``) so a fresh replica can still answer for commands sent a moment ago. A
background thread consumes; everything the event loop touches (the bounded result index, waiters,
stream subscribers) lives on the loop and is changed only there, through one
``loop.call_soon_threadsafe`` per fetched batch. So any replica can answer any command's result.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

import structlog
from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, Message, TopicPartition

from foldline.clients import results_reader_config
from foldline.errors import BrokerUnavailableError, DecodeError
from foldline.records import CommandResult
from foldline.settings import KafkaSettings
from foldline.topics import TopicNames, private_group

log = structlog.get_logger("foldline.gateway.results")

Key = tuple[str, str]  # (aggregate name, command id)


@dataclass(eq=False)  # compared by identity: each stream client is its own
class Subscriber:
    """One stream client: results of ``aggregate`` (optionally one aggregate id) pushed to ``queue``."""

    aggregate: str
    aggregate_id: str | None
    queue: asyncio.Queue[CommandResult | None] = field(default_factory=lambda: asyncio.Queue(1000))
    overflowed: bool = False


class ResultHub:
    """The loop side: a bounded index of results, futures waiting for one, and stream subscribers.

    Every method runs on the event loop thread.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._index: OrderedDict[Key, CommandResult] = OrderedDict()
        self._waiters: dict[Key, list[asyncio.Future[CommandResult]]] = {}
        self._subscribers: set[Subscriber] = set()

    def __len__(self) -> int:
        return len(self._index)

    def get(self, aggregate: str, command_id: str) -> CommandResult | None:
        return self._index.get((aggregate, command_id))

    def waiter(self, aggregate: str, command_id: str) -> asyncio.Future[CommandResult]:
        """A future resolved by the next result for this command that arrives (register before producing)."""
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault((aggregate, command_id), []).append(future)
        return future

    def forget(self, aggregate: str, command_id: str, future: asyncio.Future[CommandResult]) -> None:
        key = (aggregate, command_id)
        futures = self._waiters.get(key)
        if futures is None:
            return
        if future in futures:
            futures.remove(future)
        if not futures:
            del self._waiters[key]

    def pending(self) -> int:
        return sum(len(f) for f in self._waiters.values())

    def subscribe(self, aggregate: str, aggregate_id: str | None) -> Subscriber:
        subscriber = Subscriber(aggregate, aggregate_id)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def close_streams(self) -> None:
        """End every open results stream (the gateway is shutting down)."""
        for sub in list(self._subscribers):
            _push_end(sub.queue)

    def dispatch(self, batch: Iterable[tuple[str, CommandResult]]) -> None:
        """Record results read by the reader thread and wake whoever waits for them."""
        index = self._index
        for aggregate, result in batch:
            key = (aggregate, result.command_id)
            index[key] = result
            index.move_to_end(key)
            if len(index) > self.capacity:
                index.popitem(last=False)
            for future in self._waiters.pop(key, ()):
                if not future.done():
                    future.set_result(result)
            for sub in self._subscribers:
                if sub.aggregate != aggregate or sub.overflowed:
                    continue
                if sub.aggregate_id is not None and sub.aggregate_id != result.aggregate_id:
                    continue
                try:
                    sub.queue.put_nowait(result)
                except asyncio.QueueFull:  # a slow client: end its stream rather than hold memory
                    sub.overflowed = True
                    _push_end(sub.queue)


def _push_end(queue: asyncio.Queue[CommandResult | None]) -> None:
    """Queue the end marker, dropping the oldest item if the queue is full."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(None)


class ResultsReader:
    """Consumes every results partition in a daemon thread and feeds a ``ResultHub`` on the loop."""

    def __init__(self, kafka: KafkaSettings, aggregates: Iterable[str], hub: ResultHub, *, lookback_s: float) -> None:
        self.kafka = kafka
        self.topics = [TopicNames(a).results for a in aggregates]
        self._aggregate_of = {TopicNames(a).results: a for a in aggregates}
        self.hub = hub
        self.lookback_s = lookback_s
        self.caught_up = False  # set once every partition reached its end (the /readyz condition)
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="foldline-gateway-results", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.last_poll = time.monotonic()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def alive(self) -> bool:
        return self._thread.is_alive() and time.monotonic() - self.last_poll < 60.0

    # -- the thread ------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            consumer = Consumer(results_reader_config(self.kafka, private_group("gateway")))
        except KafkaException as exc:
            self.error = f"invalid Kafka client settings: {exc}"
            log.error("results reader cannot start", error=self.error)
            return
        try:
            remaining = self._assign(consumer)
            while not self._stop.is_set():
                self.last_poll = time.monotonic()
                batch = self._poll(consumer, remaining)
                if not self.caught_up and not remaining:
                    self.caught_up = True
                    log.info("results reader caught up", topics=self.topics)
                if batch and self._loop is not None and not self._loop.is_closed():
                    self._loop.call_soon_threadsafe(self.hub.dispatch, batch)
        except Exception as exc:  # a broken reader must show in /healthz, not die silently
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("results reader failed")
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> set[tuple[str, int]]:
        """Assign every partition of every results topic from ``now - lookback``; waits for the topics."""
        while not self._stop.is_set():
            self.last_poll = time.monotonic()  # waiting for topics is alive, not stuck
            try:
                partitions = self._partitions(consumer)
            except BrokerUnavailableError as exc:
                log.warning("waiting for the results topics", error=str(exc))
                self._stop.wait(0.5)
                continue
            since = int((time.time() - self.lookback_s) * 1000)
            wanted = [TopicPartition(t, p, since) for t, ps in partitions.items() for p in ps]
            try:
                found = consumer.offsets_for_times(wanted, timeout=15.0)
            except KafkaException as exc:
                log.warning("cannot look up start offsets; retrying", error=str(exc))
                self._stop.wait(0.5)
                continue
            start = [
                TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END) for tp in found
            ]
            consumer.assign(start)
            log.info("results reader assigned", partitions=len(start), lookback_s=self.lookback_s)
            return {(tp.topic, tp.partition) for tp in start}
        return set()

    def _partitions(self, consumer: Consumer) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for topic in self.topics:
            try:
                meta = consumer.list_topics(topic, timeout=10.0).topics.get(topic)
            except KafkaException as exc:
                raise BrokerUnavailableError(f"cannot read metadata of {topic}: {exc}") from exc
            if meta is None or meta.error is not None or not meta.partitions:
                raise BrokerUnavailableError(f"topic {topic} does not exist (yet)")
            out[topic] = sorted(meta.partitions)
        return out

    def _poll(self, consumer: Consumer, remaining: set[tuple[str, int]]) -> list[tuple[str, CommandResult]]:
        batch: list[tuple[str, CommandResult]] = []
        # consume(n, t) waits for all n records or t: wait for one, then take whatever else is there.
        messages = consumer.consume(1, 0.2)
        if messages:
            messages += consumer.consume(1000, 0)
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    remaining.discard((str(msg.topic()), int(msg.partition() or 0)))
                elif error.fatal():
                    raise BrokerUnavailableError(f"results consumer failed: {error.str()}")
                else:
                    log.warning("results consumer error", error=error.str())
                continue
            item = self._decode(msg)
            if item is not None:
                batch.append(item)
        return batch

    def _decode(self, msg: Message) -> tuple[str, CommandResult] | None:
        try:
            result = CommandResult.from_bytes(msg.value())
        except DecodeError as exc:
            log.warning("skipping an undecodable result", topic=msg.topic(), offset=msg.offset(), error=str(exc))
            return None
        return self._aggregate_of[str(msg.topic())], result
