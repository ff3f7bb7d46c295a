"""The exactly-once command handler engine: consume → decide → produce → send offsets → commit.

One transactional producer per process, fenced through the consumer group's metadata (EOS v2, as
Kafka Streams' ``exactly_once_v2``). One ``PartitionTask`` per assigned commands partition, each with
its own local store. Batches form by themselves: the loop takes whatever is queued (up to
``max_batch``), waiting at most ``commit_interval`` for the first record, so an idle handler answers in
one transaction's time and a busy one amortises the commit over thousands of commands.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, cast

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from foldline.aggregate import AggregateSpec
from foldline.consumer import ConsumerFactory, GroupMember
from foldline.errors import BrokerUnavailableError, KafkaFatalError
from foldline.handler.task import PartitionTask
from foldline.observability import metrics
from foldline.records import Status
from foldline.settings import HandlerSettings
from foldline.store.base import StateStore
from foldline.store.restore import restore_partition
from foldline.topics import TopicNames, handler_group

log = structlog.get_logger("foldline.handler")


class CommandHandler:
    def __init__(
        self,
        spec: AggregateSpec,
        settings: HandlerSettings,
        *,
        consumer_factory: ConsumerFactory,
        producer: Producer,
        restore_consumer: Consumer,
        open_partition_store: Callable[[int], StateStore],
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.topics = TopicNames(spec.name)
        self.group = GroupMember(
            consumer_factory,
            settings.kafka.group_protocol,
            [self.topics.commands],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self.producer = producer
        self.restore_consumer = restore_consumer
        self._open_store = open_partition_store
        self.tasks: dict[int, PartitionTask] = {}
        self._snapshot_offsets: dict[int, int] = {}
        self._positions: dict[int, int] = {}
        self._restoring = 0
        self._started = False
        self._last_loop = time.monotonic()
        self._lag_updated = 0.0
        self.stop_event = threading.Event()
        agg = spec.name
        self._m_status = {s: metrics.COMMANDS.labels(agg, s.value) for s in Status}
        self._m_latency = metrics.COMMAND_LATENCY.labels(agg)
        self._m_txn = metrics.TRANSACTION_DURATION.labels(agg)
        self._m_batch = metrics.BATCH_SIZE.labels(agg)
        self._m_events = metrics.EVENTS_WRITTEN.labels(agg)
        self._m_assigned = metrics.ASSIGNED_PARTITIONS.labels(agg)

    @property
    def consumer(self) -> Consumer:
        """The group member's current consumer (a new one after a protocol fallback)."""
        return self.group.consumer

    # -- health --------------------------------------------------------------------------------------
    def live(self) -> bool:
        # A loop stuck for longer than a rebalance could take means the process should be restarted;
        # a long restore is progress, not a hang.
        return self._restoring > 0 or time.monotonic() - self._last_loop < 300.0

    def ready(self) -> bool:
        return self._started and self._restoring == 0

    # -- rebalance callbacks (called inside consume(), never while a transaction is open) --------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        metrics.REBALANCES.labels(self.spec.name, "assigned").inc(len(partitions))
        for tp in partitions:
            if tp.partition in self.tasks:
                continue
            self._restoring += 1
            try:
                store = self._open_store(tp.partition)
                task = PartitionTask(
                    self.spec,
                    tp.partition,
                    store,
                    cache_size=self._cache_share(len(partitions)),
                    dedup_window=self.settings.dedup_window,
                    topic=self.topics.commands,
                )
                self._restore(task)
                self.tasks[tp.partition] = task
            finally:
                self._restoring -= 1
        self._m_assigned.set(len(self.tasks))
        log.info("partitions assigned", aggregate=self.spec.name, partitions=[tp.partition for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drop(partitions, "revoked")

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drop(partitions, "lost")

    def _drop(self, partitions: list[TopicPartition], kind: str) -> None:
        metrics.REBALANCES.labels(self.spec.name, kind).inc(len(partitions))
        for tp in partitions:
            task = self.tasks.pop(tp.partition, None)
            self._positions.pop(tp.partition, None)
            if task is not None:
                task.close()
        self._m_assigned.set(len(self.tasks))
        log.info(f"partitions {kind}", aggregate=self.spec.name, partitions=[tp.partition for tp in partitions])

    def _cache_share(self, incoming: int) -> int:
        return max(1, self.settings.cache_size // max(1, len(self.tasks) + incoming))

    def _restore(self, task: PartitionTask) -> None:
        started = time.monotonic()
        count = restore_partition(self.restore_consumer, self.topics.snapshots, task.partition, task.store)
        task.forget_all()
        if count > 10_000:
            task.store.release_memory()
        elapsed = time.monotonic() - started
        metrics.RESTORE_SECONDS.labels(self.spec.name).observe(elapsed)
        metrics.RESTORED_RECORDS.labels(self.spec.name).inc(count)
        if count or not task.needs_catch_up:
            metrics.STORE_KEYS.labels(self.spec.name, str(task.partition)).set(task.store.estimated_keys())
        if count:
            log.info(
                "store restored",
                aggregate=self.spec.name,
                partition=task.partition,
                snapshots=count,
                seconds=round(elapsed, 3),
            )

    # -- the loop --------------------------------------------------------------------------------------
    def run(self) -> None:
        """Process commands until ``stop()``; leaves no transaction open."""
        self._call(self.producer.init_transactions, 60.0)
        self.group.subscribe()
        self._started = True
        log.info("command handler started", aggregate=self.spec.name, group_protocol=self.group.protocol)
        try:
            while not self.stop_event.is_set():
                self.poll_once()
        finally:
            self.close()

    def stop(self) -> None:
        self.stop_event.set()

    def poll_once(self) -> int:
        """Take one batch and process it in one transaction; returns the number of commands."""
        now = time.monotonic()
        self._last_loop = now
        if now - self._lag_updated > 5.0:
            self._lag_updated = now
            group = handler_group(self.spec.name)
            for partition, lag in self.lag().items():
                metrics.CONSUMER_LAG.labels(self.spec.name, group, str(partition)).set(lag)
        batch = self._next_batch()
        if batch:
            self._process(batch)
        return len(batch)

    def _next_batch(self) -> list[Message]:
        return self.group.next_batch(self.settings.max_batch, self.settings.commit_interval_ms / 1000.0)

    def _process(self, batch: list[Message]) -> None:
        started = time.monotonic()
        produce = self.producer.produce
        topics = self.topics
        first_offsets: dict[int, int] = {}
        next_offsets: dict[int, int] = {}
        counts = dict.fromkeys(Status, 0)
        events = 0
        for owned in self.tasks.values():
            owned.begin_batch()
        try:
            self._call(self.producer.begin_transaction)
            for msg in batch:
                p = cast(int, msg.partition())
                task = self.tasks.get(p)
                if task is None:  # revoked between fetch and now: its records will be redelivered
                    continue
                if task.needs_catch_up:
                    self._restore(task)
                    task.needs_catch_up = False
                offset = cast(int, msg.offset())
                first_offsets.setdefault(p, offset)
                next_offsets[p] = offset + 1
                key = msg.key()
                outcome = task.handle(key, msg.value(), offset)
                result = outcome.result
                if result is not None:
                    counts[result.status] += 1
                    self._send(produce, topics.results, key, result.to_bytes(), p)
                for event in outcome.events:
                    self._send(produce, topics.events, key, event.to_bytes(), p)
                events += len(outcome.events)
                if outcome.dead_letter is not None:
                    self._send(produce, topics.dead_letters, key, outcome.dead_letter, p)
                    metrics.DEAD_LETTERS.labels(self.spec.name, result.code if result else "undecodable").inc()
            snapshots = {p: self.tasks[p].snapshots() for p in next_offsets}
            for p, items in snapshots.items():
                for key, value in items:
                    self._send(produce, topics.snapshots, key, value, p, self._on_snapshot)
            offsets = [TopicPartition(topics.commands, p, o) for p, o in next_offsets.items()]
            self._call(self.producer.send_offsets_to_transaction, offsets, self.consumer.consumer_group_metadata())
            self._call(self.producer.flush)
            self._commit()
        except _Abort as abort:
            self._abort(first_offsets, abort.cause)
            return
        # Committed: the stores may take the snapshots, with the changelog offset they now reflect.
        for p, items in snapshots.items():
            task = self.tasks[p]
            task.committed(items, self._snapshot_offsets.get(p, task.store.changelog_offset() - 1) + 1)
        self._positions.update(next_offsets)
        now = time.time()
        for msg in batch:
            _, ts = msg.timestamp()
            if ts > 0:
                self._m_latency.observe(max(0.0, now - ts / 1000.0))
        for status, n in counts.items():
            if n:
                self._m_status[status].inc(n)
        self._m_events.inc(events)
        self._m_batch.observe(len(batch))
        self._m_txn.observe(time.monotonic() - started)

    def _send(
        self,
        produce: Any,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int,
        on_delivery: Callable[[Any, Message], None] | None = None,
    ) -> None:
        while True:
            try:
                if on_delivery is None:
                    produce(topic, value, key, partition)
                else:
                    produce(topic, value, key, partition, on_delivery=on_delivery)
                return
            except BufferError:  # local queue full: let librdkafka deliver, then try again
                self.producer.poll(0.05)

    def _on_snapshot(self, error: KafkaError | None, msg: Message) -> None:
        if error is None:
            p, offset = cast(int, msg.partition()), cast(int, msg.offset())
            if offset > self._snapshot_offsets.get(p, -1):
                self._snapshot_offsets[p] = offset

    def _commit(self) -> None:
        for _ in range(10):
            try:
                self.producer.commit_transaction(60.0)
                return
            except KafkaException as exc:
                error = exc.args[0]
                if error.txn_requires_abort():
                    raise _Abort(exc) from exc
                if error.retriable():
                    continue
                raise KafkaFatalError(f"commit failed: {error.str()}") from exc
        raise _Abort(BrokerUnavailableError("commit kept failing with retriable errors"))

    def _abort(self, first_offsets: dict[int, int], cause: BaseException) -> None:
        """Abort, forget in-memory changes, and rewind so the same commands run again."""
        log.warning("transaction aborted", aggregate=self.spec.name, cause=str(cause))
        metrics.TRANSACTIONS_ABORTED.labels(self.spec.name).inc()
        try:
            self.producer.abort_transaction(60.0)
        except KafkaException as exc:
            raise KafkaFatalError(f"abort failed: {exc}") from exc
        for p, offset in first_offsets.items():
            task = self.tasks.get(p)
            if task is not None:
                task.discard()
                self.consumer.seek(TopicPartition(self.topics.commands, p, offset))

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call a transactional API, sorting its errors into abort, retry and fatal."""
        try:
            return fn(*args)
        except KafkaException as exc:
            error = exc.args[0]
            if error.txn_requires_abort():
                raise _Abort(exc) from exc
            if error.fatal():
                raise KafkaFatalError(f"{getattr(fn, '__name__', fn)} failed: {error.str()}") from exc
            if error.retriable():
                raise BrokerUnavailableError(f"{getattr(fn, '__name__', fn)}: {error.str()}") from exc
            raise KafkaFatalError(f"{getattr(fn, '__name__', fn)} failed: {error.str()}") from exc

    # -- lag and shutdown --------------------------------------------------------------------------------
    def lag(self) -> dict[int, int]:
        """Records behind the end of each owned commands partition (from the last fetch)."""
        out = {}
        for p in self.tasks:
            tp = TopicPartition(self.topics.commands, p)
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            position = self._positions.get(p)
            if high >= 0 and position is not None:
                out[p] = max(0, high - position)
        return out

    def close(self) -> None:
        try:
            self.consumer.close()  # revokes, which closes every task and its store
        finally:
            for task in self.tasks.values():
                task.close()
            self.tasks.clear()
            self.restore_consumer.close()
            self.producer.flush(10.0)
            log.info("command handler stopped", aggregate=self.spec.name)


class _Abort(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause
