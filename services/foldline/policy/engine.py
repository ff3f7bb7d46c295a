"""The policy worker: consume source events → react → produce commands and state → send offsets → commit.

The same exactly-once loop as the command handler: one transactional producer per process, fenced
through the consumer group's metadata; the commands a batch emits, its state changelog records and its
input offsets commit in one transaction, so a crash either publishes all of them or none (the targets'
handlers read ``read_committed``). One ``PolicyTask`` per assigned (events topic, partition), each with
its own local store restored from the policy's state topic. Every transactional call is made from the
loop's own thread.

A broker outage, a failed or a fenced producer does not end the worker: it says not-ready, waits until
the broker answers and starts over with new clients from what Kafka committed, as the command handler does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from foldline.clients import check_access, discard, flush_producer
from foldline.consumer import ConsumerFactory, GroupMember
from foldline.errors import BrokerUnavailableError, KafkaAuthenticationError, KafkaFatalError
from foldline.observability import policy_metrics as metrics
from foldline.outage import STALLED_S, Backoff, KafkaWatch, broker_answers, wait_for_broker
from foldline.policies import PolicySpec
from foldline.policy.task import PolicyTask
from foldline.settings import PolicySettings
from foldline.store.base import StateStore
from foldline.store.restore import restore_partition, settle_after_restore
from foldline.topics import PolicyTopics, TopicNames
from foldline.transactions import KAFKA_FAILURES, TXN_TIMEOUT, Abort, call, commit, fenced

#: How long a transaction's records may take to be delivered before it is aborted and run again (flush()
#: without a bound would wait forever while the broker is away).
TXN_FLUSH_S = 20.0

log = structlog.get_logger("foldline.policy")

#: How often the per-partition gauges (lag, pending deadlines) are measured.
GAUGE_INTERVAL_S = 10.0

#: A task is named by its source events topic and partition.
Slot = tuple[str, int]


class PolicyWorker:
    def __init__(
        self,
        spec: PolicySpec,
        settings: PolicySettings,
        *,
        consumer_factory: ConsumerFactory,
        producer_factory: Callable[[], Producer],
        restore_consumer_factory: Callable[[], Consumer],
        open_partition_store: Callable[[str, int], StateStore],
        watch: KafkaWatch | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``watch`` is the one whose ``on_error`` the consumers report to."""
        self.clock = clock
        self.spec = spec
        self.settings = settings
        self.topics = PolicyTopics(spec.name)
        self._source_of = {TopicNames(name).events: source for name, source in spec.sources.items()}
        self._probe_topic = min(self._source_of)  # the topic the worker's own metadata requests name
        self.group = GroupMember(
            consumer_factory,
            settings.kafka.group_protocol,
            sorted(self._source_of),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self._new_producer = producer_factory
        self._new_restore_consumer = restore_consumer_factory
        self.producer = producer_factory()
        self.restore_consumer = restore_consumer_factory()
        self.watch = watch or KafkaWatch(f"policy {spec.name}")
        self._backoff = Backoff()
        self._fenced_backoff = Backoff(first=5.0, cap=30.0)  # rejoining at once would fence the other again
        self._connected = False
        self._open_store = open_partition_store
        self.tasks: dict[Slot, PolicyTask] = {}
        self._state_offsets: dict[Slot, int] = {}
        self._restoring = 0
        self._last_loop = time.monotonic()
        self.stop_event = threading.Event()
        #: Totals since start, for logs and tests.
        self.emitted = 0
        self.dead_letters = 0
        self.deadlines_fired = 0
        self._next_deadline_check = 0.0
        self._next_idle_commit = 0.0
        self._next_gauges = 0.0
        #: The input offsets last committed per slot, to see when the position has moved past them alone.
        self._committed: dict[Slot, int] = {}

    @property
    def consumer(self) -> Consumer:
        return self.group.consumer

    def live(self) -> bool:
        return self._restoring > 0 or time.monotonic() - self._last_loop < 300.0

    def ready(self) -> bool:
        stalled = time.monotonic() - self._last_loop > STALLED_S  # stuck in a client call (see STALLED_S)
        return self._connected and self._restoring == 0 and self.watch.up and not stalled

    # -- rebalance callbacks (inside consume(), never while a transaction is open) -------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            slot = (tp.topic, tp.partition)
            if slot in self.tasks:
                continue
            source = self._source_of[slot[0]]
            self._restoring += 1
            try:
                task = PolicyTask(
                    self.spec, source, tp.partition, self._open_store(source.name, tp.partition), topic=slot[0]
                )
                self._restore(task)
                self.tasks[slot] = task
            finally:
                self._restoring -= 1
        metrics.ASSIGNED_PARTITIONS.labels(self.spec.name).set(len(self.tasks))
        log.info(
            "partitions assigned", policy=self.spec.name, partitions=[(tp.topic, tp.partition) for tp in partitions]
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._committed.pop((tp.topic, tp.partition), None)
            owned = self.tasks.pop((tp.topic, tp.partition), None)
            if owned is not None:
                metrics.policy_partition_gone(self.spec.name, owned.source.name, tp.partition)
                owned.close()
        metrics.ASSIGNED_PARTITIONS.labels(self.spec.name).set(len(self.tasks))
        log.info(
            "partitions released", policy=self.spec.name, partitions=[(tp.topic, tp.partition) for tp in partitions]
        )

    def _restore(self, task: PolicyTask) -> None:
        topic = self.topics.state(task.source.name)
        count = restore_partition(self.restore_consumer, topic, task.partition, task.store)
        settle_after_restore(task.store, count)
        task.index_deadlines()
        if count:
            log.info("store restored", policy=self.spec.name, topic=topic, partition=task.partition, records=count)

    # -- the loop ------------------------------------------------------------------------------------
    def run(self) -> None:
        """React to events until ``stop()``; leaves no transaction open. Kafka failing never ends it: see
        ``_recover``."""
        metrics.policy_started(self.spec.name, sorted(self.spec.sources))
        try:
            while not self.stop_event.is_set():
                try:
                    if not self._connected:
                        self._connect()
                    self.poll_once()
                except KAFKA_FAILURES as exc:
                    if self.stop_event.is_set():
                        break
                    self._recover(exc)
        finally:
            self.close()

    def _connect(self) -> None:
        # A refused login is not an outage, but the worker stays up all the same: not ready, asking again.
        check_access(self.settings.kafka)
        call(self.producer.init_transactions, TXN_TIMEOUT)  # fences predecessors, aborts their leftovers
        self.group.subscribe()
        self._connected = True
        log.info("policy worker started", policy=self.spec.name, sources=sorted(self.spec.sources))

    def _recover(self, cause: BaseException) -> None:
        """Kafka failed us: wait until the broker answers, then start over with new clients.

        Closing the group member gives the partitions up (their tasks and stores close); the new clients
        begin from what Kafka committed, as a restarted process would: the new producer's
        ``init_transactions`` aborts the open transaction, positions come from the group's committed offsets
        and the tasks' states from their stores and the state topics.
        """
        self._connected = False
        was_fenced = fenced(cause)
        if isinstance(cause, KafkaAuthenticationError):
            log.error("kafka refused this policy worker; not ready until it is accepted", policy=self.spec.name,
                      reason=str(cause))  # fmt: skip
        self.watch.mark_down(str(cause))
        metrics.KAFKA_RECOVERIES.labels(self.spec.name, "fenced" if was_fenced else "failed").inc()
        log.warning(
            "kafka clients failed; waiting for the broker to rebuild them",
            policy=self.spec.name,
            cause=f"{type(cause).__name__}: {cause}",
            fenced=was_fenced,
        )
        backoff = self._fenced_backoff if was_fenced else self._backoff
        if not wait_for_broker(self.stop_event, backoff, self._others_reach_broker, self._beat):
            return
        self._rebuild()
        self.watch.mark_up()
        backoff.reset()

    def _beat(self) -> None:
        self._last_loop = time.monotonic()

    def _rebuild(self) -> None:
        self.group.renew()  # revokes or loses the partitions: their tasks close
        for task in self.tasks.values():
            task.close()
        self.tasks.clear()
        self._committed.clear()
        self._state_offsets.clear()
        metrics.ASSIGNED_PARTITIONS.labels(self.spec.name).set(0)
        discard(self.restore_consumer)
        discard(self.producer)
        self.producer = self._new_producer()
        self.restore_consumer = self._new_restore_consumer()
        log.info("kafka clients rebuilt", policy=self.spec.name)

    def stop(self) -> None:
        self.stop_event.set()

    def poll_once(self) -> int:
        self._last_loop = time.monotonic()
        # The consumer said the brokers are away: ask again, and replace the clients if they must go.
        renew = self.watch.recheck(self._backoff, self._probe, self._others_reach_broker)
        if renew is not None:
            raise BrokerUnavailableError(renew)
        batch = self.group.next_batch(self.settings.max_batch, self.settings.commit_interval_ms / 1000.0)
        self.watch.after_poll(bool(batch), self.consumer, self._probe_topic)
        # Deadlines are checked at most every commit interval (a wall-clock resolution well below a second).
        due = False
        if time.monotonic() >= self._next_deadline_check:
            self._next_deadline_check = time.monotonic() + self.settings.commit_interval_ms / 1000.0
            now = self.clock()
            due = any(task.due(now) for task in self.tasks.values())
        if batch or due:
            self._process(batch, fire=due)
        elif time.monotonic() >= self._next_idle_commit:
            self._next_idle_commit = time.monotonic() + self.settings.commit_interval_ms / 1000.0
            self._commit_skipped()
        if time.monotonic() >= self._next_gauges:
            self._next_gauges = time.monotonic() + GAUGE_INTERVAL_S
            self._update_gauges()
        return len(batch)

    def _probe(self) -> bool:
        return self.watch.probe(self.consumer, self._probe_topic)

    def _others_reach_broker(self) -> bool:
        """Whether a new client of its own is answered (tells an outage from stranded clients)."""
        return broker_answers(self.settings.kafka.client_config(), self._probe_topic)

    def _update_gauges(self) -> None:
        """Lag (the position against the last fetched read_committed end) and pending deadlines per
        partition. From the loop's thread: the consumer is only ever used there."""
        slots = list(self.tasks)
        if not slots:
            return
        for tp in self.consumer.position([TopicPartition(t, p) for t, p in slots]):
            task = self.tasks[(tp.topic, tp.partition)]
            labels = (self.spec.name, task.source.name, str(tp.partition))
            marks = self.consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), cached=True)
            if marks is not None and marks[1] >= 0 and tp.offset >= 0:
                metrics.LAG.labels(*labels).set(max(marks[1] - tp.offset, 0))
            metrics.DEADLINES_SCHEDULED.labels(*labels).set(task.pending())

    def _commit_skipped(self) -> None:
        """Commit positions that moved past offsets holding no record for us (a transaction's commit marker,
        an aborted transaction's records): otherwise a caught-up worker's group shows a lag of one per
        partition forever. Only positions of records already handled (the position is the offset after the
        last record returned, past the markers that follow it), in an offsets-only transaction."""
        slots = list(self.tasks)
        if not slots:
            return
        positions = self.consumer.position([TopicPartition(t, p) for t, p in slots])
        ahead = [
            TopicPartition(tp.topic, tp.partition, tp.offset)
            for tp in positions
            if tp.offset >= 0 and tp.offset > self._committed.get((tp.topic, tp.partition), -1)
        ]
        if not ahead:
            return
        try:
            call(self.producer.begin_transaction)
            self._send_offsets(ahead)
            commit(self.producer, self.watch)
        except Abort as abort:
            log.warning("transaction aborted", policy=self.spec.name, cause=str(abort.cause))
            try:
                self.producer.abort_transaction(TXN_TIMEOUT)
            except KafkaException as exc:
                raise KafkaFatalError(f"abort failed: {exc}") from exc
            return
        for tp in ahead:
            self._committed[(tp.topic, tp.partition)] = tp.offset

    def _process(self, batch: list[Message], *, fire: bool = False) -> None:
        first_offsets: dict[Slot, int] = {}
        next_offsets: dict[Slot, int] = {}
        emitted = letters = fired = 0
        handled: dict[str, int] = {}
        codes: dict[str, int] = {}
        for task in self.tasks.values():
            task.begin_batch()
        try:
            call(self.producer.begin_transaction)
            if fire:  # deadlines first: a command due now precedes what this batch's events emit
                now = self.clock()
                for task in self.tasks.values():
                    for command in task.fire(now):
                        self._send(command.topic, command.key, command.value, None)
                        fired += 1
            for msg in batch:
                slot = (cast(str, msg.topic()), cast(int, msg.partition()))
                found = self.tasks.get(slot)
                if found is None:  # revoked between fetch and now: redelivered to the new owner
                    continue
                task = found
                if task.needs_catch_up:
                    self._restore(task)
                    task.needs_catch_up = False
                offset = cast(int, msg.offset())
                first_offsets.setdefault(slot, offset)
                next_offsets[slot] = offset + 1
                outcome = task.handle(msg.key(), msg.value(), offset)
                handled[task.source.name] = handled.get(task.source.name, 0) + 1
                for command in outcome.commands:
                    # No partition given: the producer's murmur2 partitioner places the key as the gateway's does.
                    self._send(command.topic, command.key, command.value, None)
                emitted += len(outcome.commands)
                if outcome.dead_letter is not None:
                    self._send(self.topics.dead_letters, msg.key(), outcome.dead_letter, None)
                    letters += 1
                    codes[outcome.code] = codes.get(outcome.code, 0) + 1
            touched = set(next_offsets) | {slot for slot, task in self.tasks.items() if task.dirty()}
            snapshots = {slot: self.tasks[slot].snapshots() for slot in touched}
            for slot, items in snapshots.items():
                state_topic = self.topics.state(self.tasks[slot].source.name)
                for key, value in items:
                    self._send(state_topic, key, value, slot[1], self._on_state_record)
            offsets = [TopicPartition(topic, p, o) for (topic, p), o in next_offsets.items()]
            if offsets:
                self._send_offsets(offsets)
            if call(flush_producer, self.producer, TXN_FLUSH_S) > 0:
                raise Abort(BrokerUnavailableError("records not delivered in time"))
            commit(self.producer, self.watch)
        except Abort as abort:
            metrics.TRANSACTIONS_ABORTED.labels(self.spec.name).inc()
            self._abort(first_offsets, abort.cause)
            for task in self.tasks.values():
                task.discard()  # fired deadlines too: they stay pending and fire in a later transaction
            return
        for slot, items in snapshots.items():
            task = self.tasks[slot]
            state_topic = self.topics.state(task.source.name)
            last = self._state_offsets.get((state_topic, slot[1]), task.store.changelog_offset() - 1)
            task.committed(items, last + 1)
        self._committed.update(next_offsets)
        for source, n in handled.items():
            metrics.EVENTS.labels(self.spec.name, source).inc(n)
        for code, n in codes.items():
            metrics.DEAD_LETTERS.labels(self.spec.name, code).inc(n)
        metrics.COMMANDS.labels(self.spec.name).inc(emitted + fired)
        metrics.DEADLINES_FIRED.labels(self.spec.name).inc(fired)
        self.emitted += emitted
        self.dead_letters += letters
        self.deadlines_fired += fired
        if fired:
            log.info("deadlines fired", policy=self.spec.name, commands=fired)

    def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None,
        on_delivery: Callable[[Any, Message], None] | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {} if on_delivery is None else {"on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self.producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:  # local queue full: let librdkafka deliver, then try again
                self.producer.poll(0.05)

    def _on_state_record(self, error: KafkaError | None, msg: Message) -> None:
        if error is None:
            slot = (cast(str, msg.topic()), cast(int, msg.partition()))
            offset = cast(int, msg.offset())
            if offset > self._state_offsets.get(slot, -1):
                self._state_offsets[slot] = offset

    def _send_offsets(self, offsets: list[TopicPartition]) -> None:
        # librdkafka 2.16 can wait in send_offsets_to_transaction past its timeout while the coordinator is
        # away (the command handler's outage test, under gdb): never enter it while the broker is known away.
        if not self.watch.up:
            raise Abort(BrokerUnavailableError(f"the broker is away: {self.watch.reason}"))
        call(self.producer.send_offsets_to_transaction, offsets, self.consumer.consumer_group_metadata(), TXN_TIMEOUT)

    def _abort(self, first_offsets: dict[Slot, int], cause: BaseException) -> None:
        """Abort, forget in-memory changes, and rewind so the same events run again."""
        log.warning("transaction aborted", policy=self.spec.name, cause=str(cause))
        try:
            self.producer.abort_transaction(TXN_TIMEOUT)
        except KafkaException as exc:
            raise KafkaFatalError(f"abort failed: {exc}") from exc
        for slot, offset in first_offsets.items():
            task = self.tasks.get(slot)
            if task is not None:
                task.discard()
                self.consumer.seek(TopicPartition(slot[0], slot[1], offset))

    def close(self) -> None:
        try:
            self.consumer.close()  # revokes, which closes every task and its store
        finally:
            for task in self.tasks.values():
                task.close()
            self.tasks.clear()
            self.restore_consumer.close()
            try:
                flush_producer(self.producer, 10.0)
            except KafkaException as exc:  # fenced or failed: what it still held belongs to an aborted transaction
                log.warning("flushing the producer at close failed", policy=self.spec.name, error=str(exc))
            log.info("policy worker stopped", policy=self.spec.name)
