"""The exactly-once command handler engine: consume → decide → produce → send offsets → commit.

One transactional producer per process, fenced through the consumer group's metadata (EOS v2, as
Kafka Streams' ``exactly_once_v2``). One ``PartitionTask`` per assigned commands partition, each with
its own local store. Batches form by themselves: the loop takes whatever is queued (up to
``max_batch``), waiting at most ``commit_interval`` for the first record, so an idle handler answers in
one transaction's time and a busy one amortises the commit over thousands of commands.

A broker outage never ends the process: it reports not-ready, waits (bounded, jittered backoff) until
the broker answers, then closes and rebuilds its Kafka clients and starts over from what Kafka
committed - the same path as a restarted process, so exactly-once holds the same way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, cast

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from foldline.aggregate import AggregateSpec
from foldline.clients import check_access, discard, flush_producer
from foldline.consumer import ConsumerFactory, GroupMember
from foldline.errors import BrokerUnavailableError, KafkaAuthenticationError, KafkaFatalError
from foldline.handler.lag import CommandsLag
from foldline.handler.task import PartitionTask
from foldline.observability import metrics, series
from foldline.outage import STALLED_S, Backoff, KafkaWatch, broker_answers, wait_for_broker
from foldline.records import Status
from foldline.settings import HandlerSettings
from foldline.store.base import StateStore
from foldline.store.restore import restore_partition, settle_after_restore
from foldline.topics import TopicNames, handler_group
from foldline.transactions import (
    KAFKA_FAILURES,
    TXN_TIMEOUT,
    Abort,
    Recover,
    call,
    commit,
    fenced,
    producer_error,
)

log = structlog.get_logger("foldline.handler")

#: Seconds of command processing one transaction may take; the batch's other records wait for the next.
#: Far under the transaction timeout (10 s), past which the broker would fence the producer: a batch of
#: commands on huge aggregates (each measured against FOLDLINE_MAX_RECORD_BYTES) can take that long.
BATCH_BUDGET_S = 2.0
# A loop stuck in a client call for this long is not live (a stall shorter than that: not ready, STALLED_S).
_HUNG = 120.0
#: A transaction that took longer is logged with its parts (processing, send_offsets, flush, commit): where a
#: latency spike came from.
SLOW_TXN_S = 0.5


class CommandHandler:
    def __init__(
        self,
        spec: AggregateSpec,
        settings: HandlerSettings,
        *,
        consumer_factory: ConsumerFactory,
        producer_factory: Callable[[int], Producer],
        restore_consumer_factory: Callable[[], Consumer],
        open_partition_store: Callable[[int], StateStore],
        watch: KafkaWatch | None = None,
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
        self.watch = watch or KafkaWatch(f"command-handler {spec.name}")
        self._new_producer = producer_factory
        self._new_restore_consumer = restore_consumer_factory
        # settings.txn_producers producers take turns, one transaction each (see HandlerSettings): ``producer``
        # is the one whose turn it is.
        self.producers = [producer_factory(i) for i in range(settings.txn_producers)]
        self._turn = 0
        self.producer = self.producers[0]
        self.restore_consumer = restore_consumer_factory()
        self._connected = False
        self._backoff = Backoff()
        self._fenced_backoff = Backoff(first=5.0, cap=30.0)  # rejoining at once would fence the other again
        self._open_store = open_partition_store
        self.tasks: dict[int, PartitionTask] = {}
        self._snapshot_offsets: dict[int, int] = {}
        self._lag = CommandsLag(self.topics.commands)
        self._restoring = 0
        self._started = False
        self._last_loop = time.monotonic()
        self._lag_updated = 0.0
        self.stop_event = threading.Event()
        agg = spec.name
        series.handler_started(agg)
        self._m_status = {s: metrics.COMMANDS.labels(agg, s.value) for s in Status}
        self._m_latency = metrics.COMMAND_LATENCY.labels(agg)
        self._m_txn = metrics.TRANSACTION_DURATION.labels(agg)
        self._m_batch = metrics.BATCH_SIZE.labels(agg)
        self._m_committed = [metrics.TRANSACTIONS_COMMITTED.labels(agg, str(i)) for i in range(len(self.producers))]
        self._m_events = metrics.EVENTS_WRITTEN.labels(agg)
        self._m_assigned = metrics.ASSIGNED_PARTITIONS.labels(agg)
        self._droppable = frozenset({self.topics.results, self.topics.dead_letters})
        self._partitions: int | None = None

    @property
    def consumer(self) -> Consumer:
        """The group member's current consumer (a new one after a protocol fallback)."""
        return self.group.consumer

    # -- health --------------------------------------------------------------------------------------
    def live(self) -> bool:
        # A loop stuck in a client call this long will not come back by itself (see STALLED_S): restart
        # the process. A long restore is progress, not a hang.
        return self._restoring > 0 or time.monotonic() - self._last_loop < _HUNG

    def ready(self) -> bool:
        stalled = time.monotonic() - self._last_loop > STALLED_S
        return self._started and self._connected and self._restoring == 0 and self.watch.up and not stalled

    # -- rebalance callbacks (called inside consume(), never while a transaction is open) --------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        metrics.REBALANCES.labels(self.spec.name, "assigned").inc(len(partitions))
        count = self._partition_count()  # never the group consumer inside its callback: see there
        for owned in self.tasks.values():
            owned.partitions = count
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
                    partitions=count,
                    max_record_bytes=self.settings.max_record_bytes,
                )
                try:
                    self._restore(task)
                except BaseException:
                    task.close()
                    raise
                self.tasks[tp.partition] = task
            finally:
                self._restoring -= 1
        self._m_assigned.set(len(self.tasks))
        log.info("partitions assigned", aggregate=self.spec.name, partitions=[tp.partition for tp in partitions])

    def _partition_count(self) -> int | None:
        """The commands topic's partitions now: a command is processed only on its key's partition. If the
        metadata cannot be read, the last count known (none at first: no placement check until it is).

        Asked through the restore consumer, never the group member: this runs inside the member's consume(),
        and a list_topics on the same client from its own callback ends the binding's per-call state, so the
        next callback of that consume() (KIP-848 sends a revocation right behind a first assignment) aborted
        the process in ``CallState_get: Assertion cs != NULL`` (docs/command-handler.md, "Rebalancing")."""
        try:
            meta = self.restore_consumer.list_topics(self.topics.commands, timeout=10.0)
            topic = meta.topics[self.topics.commands]
            if topic.error is None and topic.partitions:
                self._partitions = len(topic.partitions)
        except (KafkaException, KeyError) as exc:
            log.warning("cannot read the commands topic's partitions", topic=self.topics.commands, error=str(exc))
        return self._partitions

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drop(partitions, "revoked")

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drop(partitions, "lost")

    def _drop(self, partitions: list[TopicPartition], kind: str) -> None:
        metrics.REBALANCES.labels(self.spec.name, kind).inc(len(partitions))
        for tp in partitions:
            task = self.tasks.pop(tp.partition, None)
            self._lag.positions.pop(tp.partition, None)
            series.handler_partition_gone(self.spec.name, handler_group(self.spec.name), tp.partition)
            if task is not None:
                task.close()
        self._m_assigned.set(len(self.tasks))
        log.info(f"partitions {kind}", aggregate=self.spec.name, partitions=[tp.partition for tp in partitions])

    def _cache_share(self, incoming: int) -> int:
        return max(1, self.settings.cache_size // max(1, len(self.tasks) + incoming))

    def _restore(self, task: PartitionTask) -> None:
        started = time.monotonic()
        remaining = metrics.RESTORE_REMAINING.labels(self.spec.name, str(task.partition))
        restoring = metrics.RESTORING_PARTITIONS.labels(self.spec.name)
        restoring.inc()
        try:
            count = restore_partition(
                self.restore_consumer,
                self.topics.snapshots,
                task.partition,
                task.store,
                on_progress=remaining.set,
                abandon=lambda: self.stop_event.is_set() or (not self.watch.up and not self._probe()),
            )
        finally:
            restoring.dec()
        task.forget_all()
        settle_after_restore(task.store, count)
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
        """Process commands until ``stop()``; leaves no transaction open. A broker outage or a failed
        Kafka client never ends it: see ``_recover``."""
        try:
            while not self.stop_event.is_set():
                try:
                    if not self._connected:
                        self._connect()
                    self.poll_once()
                except KAFKA_FAILURES as exc:
                    self._recover(exc)
        finally:
            self.close()

    def _connect(self) -> None:
        # A refused login or certificate is not an outage, but the handler still stays up: not ready, the
        # broker's reason in its log, asking again with the backoff (credentials made or granted later are
        # picked up without a restart). A broker out of reach only makes this return False.
        check_access(self.settings.kafka)
        for producer in self.producers:  # each fences its predecessors and aborts what they left open
            call(producer.init_transactions, TXN_TIMEOUT)
        self.group.subscribe()
        self._connected = self._started = True
        log.info("command handler started", aggregate=self.spec.name, group_protocol=self.group.protocol)

    def _recover(self, cause: BaseException) -> None:
        """Kafka failed us: wait until the broker answers, then start over with new clients.

        Closing the group member gives the partitions up cleanly (their tasks and stores close); the new
        clients begin from what Kafka committed, as a restarted process would: the open transaction is
        aborted by the new producer's ``init_transactions``, positions come from the group's committed
        offsets and states from the stores and the snapshots topic. A fenced producer (another one with
        this transactional id took over, or the coordinator bumped its epoch) waits longer before rejoining.
        """
        self._connected = False
        if isinstance(cause, KafkaAuthenticationError):
            log.error("kafka refused this handler; not ready until it is accepted", aggregate=self.spec.name,
                      reason=str(cause))  # fmt: skip
        was_fenced = fenced(cause) or any([fenced(producer_error(producer)) for producer in self.producers])
        self.watch.mark_down(str(cause))
        metrics.KAFKA_RECOVERIES.labels("command-handler", self.spec.name, "fenced" if was_fenced else "failed").inc()
        log.warning(
            "kafka clients failed; waiting for the broker to rebuild them",
            aggregate=self.spec.name,
            cause=f"{type(cause).__name__}: {cause}",
            fenced=was_fenced,
        )
        backoff = self._fenced_backoff if was_fenced else self._backoff
        if not wait_for_broker(self.stop_event, backoff, self._broker_back, self._beat):
            return
        self.watch.mark_up()  # every client is made anew below
        self._rebuild()

    def _beat(self) -> None:
        self._last_loop = time.monotonic()

    def _broker_back(self) -> bool:
        return self._probe() or self._others_reach_broker()

    def _probe(self) -> bool:
        return self.watch.probe(self.restore_consumer, self.topics.commands)

    def _others_reach_broker(self) -> bool:
        return broker_answers(self.settings.kafka.client_config(), self.topics.commands)

    def _rebuild(self) -> None:
        self.group.renew()  # revokes or loses the partitions: their tasks close
        for task in self.tasks.values():
            task.close()
        self.tasks.clear()
        self._lag.positions.clear()
        self._snapshot_offsets.clear()
        self._m_assigned.set(0)
        discard(self.restore_consumer)
        for producer in self.producers:
            discard(producer)
        self.producers = [self._new_producer(i) for i in range(len(self.producers))]
        self._turn = 0
        self.producer = self.producers[0]
        self.restore_consumer = self._new_restore_consumer()
        log.info("kafka clients rebuilt", aggregate=self.spec.name)

    def stop(self) -> None:
        self.stop_event.set()

    def poll_once(self) -> int:
        """Take one batch and process it in one transaction; returns the number of commands."""
        now = time.monotonic()
        self._last_loop = now
        # librdkafka said the brokers are away: ask again, and replace the clients if they must go.
        renew = self.watch.recheck(self._backoff, self._probe, self._others_reach_broker)
        if renew is not None:
            raise Recover(BrokerUnavailableError(renew))
        if now - self._lag_updated > 5.0:
            self._lag_updated = now
            group = handler_group(self.spec.name)
            for partition, lag in self.lag().items():
                metrics.CONSUMER_LAG.labels(self.spec.name, group, str(partition)).set(lag)
        batch = self._next_batch()
        self.watch.after_poll(bool(batch), self.restore_consumer, self.topics.commands)
        if batch:
            self._process(batch)
        return len(batch)

    def _next_batch(self) -> list[Message]:
        return self.group.next_batch(self.settings.max_batch, self.settings.commit_interval_ms / 1000.0)

    def _process(self, batch: list[Message]) -> None:
        started = time.monotonic()
        turn = self._turn
        produce = self.producer.produce
        topics = self.topics
        first_offsets: dict[int, int] = {}
        next_offsets: dict[int, int] = {}
        counts = dict.fromkeys(Status, 0)
        events = 0
        for owned in self.tasks.values():
            owned.begin_batch()
        try:
            call(self.producer.begin_transaction)
            for i, msg in enumerate(batch):
                if i and time.monotonic() - started > BATCH_BUDGET_S:
                    self._put_back(batch[i:])
                    batch = batch[:i]
                    break
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
                outcome = task.handle(msg.key(), msg.value(), offset)
                key = outcome.key
                result = outcome.result
                if result is not None:
                    counts[result.status] += 1
                    self._send(produce, topics.results, key, result.to_bytes(), p)
                for raw in outcome.event_bytes:
                    self._send(produce, topics.events, key, raw, p)
                events += len(outcome.event_bytes)
                if outcome.dead_letter is not None:
                    self._send(produce, topics.dead_letters, key, outcome.dead_letter, p)
                    metrics.DEAD_LETTERS.labels(self.spec.name, outcome.code or "undecodable").inc()
            snapshots = {p: self.tasks[p].snapshots() for p in next_offsets}
            for p, items in snapshots.items():
                # One delivery callback per partition: a transactional producer keeps a partition's order,
                # so its last snapshot has the highest offset, the only one ``committed`` needs.
                last = len(items) - 1
                for i, (key, value) in enumerate(items):
                    self._send(produce, topics.snapshots, key, value, p, self._on_snapshot if i == last else None)
            processed = time.monotonic()
            offsets = [TopicPartition(topics.commands, p, o) for p, o in next_offsets.items()]
            if not self.watch.up:  # see STALLED_S: never enter send_offsets_to_transaction without a broker
                raise Abort(BrokerUnavailableError(f"the broker is away: {self.watch.reason}"))
            call(
                self.producer.send_offsets_to_transaction,
                offsets,
                self.consumer.consumer_group_metadata(),
                TXN_TIMEOUT,
            )
            offsets_in = time.monotonic()
            if self._flush() > 0:
                raise Abort(BrokerUnavailableError("records not delivered in time"))
            flushed = time.monotonic()
            commit(self.producer, self.watch)
            committed = time.monotonic()
        except Abort as abort:
            self._abort(first_offsets, abort.cause)
            return
        # Committed: the stores may take the snapshots, with the changelog offset they now reflect.
        for p, items in snapshots.items():
            task = self.tasks[p]
            task.committed(items, self._snapshot_offsets.get(p, task.store.changelog_offset() - 1) + 1)
        self._lag.positions.update(next_offsets)
        self._m_committed[turn].inc()
        if len(self.producers) > 1:  # the next transaction on the other producer: see HandlerSettings.txn_producers
            self._turn = (self._turn + 1) % len(self.producers)
            self.producer = self.producers[self._turn]
        now = time.time()
        for msg in batch:
            _, ts = msg.timestamp()
            if ts > 0:
                self._m_latency.observe(max(0.0, now - ts / 1000.0))
        for status, n in counts.items():
            if n:
                self._m_status[status].inc(n)
        self._m_events.inc(events)
        self._backoff.reset()
        self._fenced_backoff.reset()
        self._m_batch.observe(len(batch))
        took = time.monotonic() - started
        self._m_txn.observe(took)
        if took > SLOW_TXN_S:
            log.info("slow transaction", aggregate=self.spec.name, seconds=round(took, 3), commands=len(batch),
                     processing=round(processed - started, 3), offsets=round(offsets_in - processed, 3),
                     flush=round(flushed - offsets_in, 3), commit=round(committed - flushed, 3),
                     producer=turn)  # fmt: skip

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
            except KafkaException as exc:
                # The task keeps every record within FOLDLINE_MAX_RECORD_BYTES; should a result or a dead
                # letter still be refused for its size, it is dropped (logged), never the process.
                if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE or topic not in self._droppable:
                    raise
                log.error("record too large to write: dropped", topic=topic, partition=partition, size=len(value))
                return

    def _put_back(self, rest: list[Message]) -> None:
        """Records left out of this transaction: seek back so that the next batch starts with them."""
        first: dict[int, int] = {}
        for msg in rest:
            first.setdefault(cast(int, msg.partition()), cast(int, msg.offset()))
        for p, offset in first.items():
            if p in self.tasks:
                self.consumer.seek(TopicPartition(self.topics.commands, p, offset))

    def _flush(self) -> int:
        return flush_producer(self.producer, TXN_TIMEOUT)

    def _on_snapshot(self, error: KafkaError | None, msg: Message) -> None:
        if error is None:
            p, offset = cast(int, msg.partition()), cast(int, msg.offset())
            if offset > self._snapshot_offsets.get(p, -1):
                self._snapshot_offsets[p] = offset

    def _abort(self, first_offsets: dict[int, int], cause: BaseException) -> None:
        """Abort, forget in-memory changes, and rewind so the same commands run again."""
        log.warning("transaction aborted", aggregate=self.spec.name, cause=str(cause))
        metrics.TRANSACTIONS_ABORTED.labels(self.spec.name).inc()
        try:
            self.producer.abort_transaction(TXN_TIMEOUT)
        except KafkaException as exc:  # the broker is away or the producer failed: start over from Kafka
            raise Recover(KafkaFatalError(f"abort failed: {exc}")) from exc
        for p, offset in first_offsets.items():
            task = self.tasks.get(p)
            if task is not None:
                task.discard()
                try:
                    self.consumer.seek(TopicPartition(self.topics.commands, p, offset))
                except KafkaException as exc:
                    raise Recover(BrokerUnavailableError(f"cannot rewind partition {p}: {exc}")) from exc

    # -- lag and shutdown --------------------------------------------------------------------------------
    def lag(self) -> dict[int, int]:
        """Records behind the end of each owned commands partition; from the loop's thread only."""
        return self._lag.of(self.consumer, self.tasks)

    def close(self) -> None:
        try:
            self.consumer.close()  # revokes, which closes every task and its store
        except (KafkaException, RuntimeError) as exc:
            log.warning("closing the consumer failed", aggregate=self.spec.name, error=str(exc))
        finally:
            for task in self.tasks.values():
                task.close()
            self.tasks.clear()
            self.restore_consumer.close()
            for producer in self.producers:
                try:
                    flush_producer(producer, 10.0)
                except KafkaException as exc:  # fenced or failed: what it held belongs to an aborted transaction
                    log.warning("flushing the producer at close failed", aggregate=self.spec.name, error=str(exc))
            log.info("command handler stopped", aggregate=self.spec.name)
