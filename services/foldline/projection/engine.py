"""The projector: one view revision fed from its source topic, exactly once into the database.

It joins a consumer group (``foldline.<agg>.projection.<view>.r<rev>``) only to share partitions
among replicas; it never commits offsets to Kafka. On assignment it seeks to the positions stored in
the database, and every batch stores the new positions in the same transaction as its rows.

A revision is *active* (serving reads) or *building*. The first revision of a view is active at once.
A new revision builds its own table from the start of the topic while the old one keeps serving; once
the positions stored for every partition reach the end offsets (read_committed, i.e. last stable
offsets) measured at most ``catchup_window`` earlier, ``switch`` makes it active in one transaction
and drops the old tables. A projector whose revision was superseded stops by itself.

Neither a database nor a broker outage ends it: a failed batch rolls back and is read again, /readyz
says not-ready while either is away, and a consumer that failed beyond use is replaced (after the broker
answers again) by a new one, which resumes from the positions in the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from foldline.consumer import ConsumerFactory, GroupMember
from foldline.errors import BrokerUnavailableError, KafkaFatalError, RetryableError
from foldline.observability import metrics, series
from foldline.outage import Backoff, KafkaWatch, broker_answers, wait_for_broker
from foldline.projection.api import ProjectionSpec
from foldline.projection.apply import Applier, BatchResult, SourceMessage
from foldline.projection.base import Registration, SqlStore
from foldline.projection.errors import MissingTableError, ProjectionStoreError, RevisionRetiredError
from foldline.settings import ProjectorSettings
from foldline.topics import progress

log = structlog.get_logger("foldline.projection")


T = TypeVar("T")


@dataclass(frozen=True)
class SwitchInfo:
    """Handed to ``on_switch`` right after the switch committed, before the next batch."""

    view: str
    revision: int
    targets: dict[int, int]
    measured_at: float


class Projector:
    def __init__(
        self,
        spec: ProjectionSpec,
        settings: ProjectorSettings,
        *,
        store: SqlStore,
        consumer_factory: ConsumerFactory,
        on_switch: Callable[[SwitchInfo], None] | None = None,
        owns_store: bool = False,
        watch: KafkaWatch | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.store = store
        self.table = spec.table
        self.topic = spec.topic
        self.applier = Applier(spec)
        self.on_switch = on_switch
        self._owns_store = owns_store
        self.assigned: set[int] = set()
        self.group = GroupMember(
            consumer_factory,
            settings.kafka.group_protocol,
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
            on_fallback=self.assigned.clear,
        )
        self.stop_event = threading.Event()
        self.watch = watch or KafkaWatch(f"projector {spec.aggregate}/{spec.view}")
        self.database_up = True
        self._backoff = Backoff()
        self.state = "starting"  # then active | building | retired
        self.retired = False
        self.positions: dict[int, int] = {}
        self._started = False
        self._last_loop = time.monotonic()
        self._target: dict[int, tuple[int, int]] = {}
        self._target_at = 0.0
        self._next_check = 0.0
        self._next_state_check = time.monotonic() + 2.0
        self._next_lag = 0.0
        self._lag: int | None = None
        labels = (spec.aggregate, spec.view)
        series.projector_started(*labels)
        self._m_rows = metrics.PROJECTION_ROWS.labels(*labels)
        self._m_records = metrics.PROJECTION_RECORDS.labels(*labels)
        self._m_lag = metrics.PROJECTION_LAG.labels(*labels)
        self._m_batch = metrics.PROJECTION_BATCH_SECONDS.labels(*labels)
        self._log = log.bind(view=spec.view, revision=spec.revision, aggregate=spec.aggregate)

    # -- health --------------------------------------------------------------------------------------
    def live(self) -> bool:
        return time.monotonic() - self._last_loop < 300.0

    def ready(self) -> bool:
        """Ready once this revision serves the view (a rebuilding pod is not ready until it switched),
        and while both its database and Kafka answer."""
        return self._started and self.state == "active" and self.database_up and self.watch.up

    def _database_away(self, exc: BaseException) -> None:
        if self.database_up:
            self._log.warning("projection database unavailable", error=str(exc))
        self.database_up = False

    def _database_back(self) -> None:
        if not self.database_up:
            self._log.info("projection database available again")
        self.database_up = True

    # -- rebalance -----------------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = self._retrying(lambda: self.store.positions(self.table.view, self.table.revision, self.topic))
        for tp in partitions:
            tp.offset = stored.get(tp.partition, OFFSET_BEGINNING)
            if tp.partition in stored:
                self.positions[tp.partition] = stored[tp.partition]
        consumer.incremental_assign(partitions)
        self.assigned.update(tp.partition for tp in partitions)
        self._log.info("partitions assigned", partitions={tp.partition: tp.offset for tp in partitions})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.assigned.discard(tp.partition)
            self.positions.pop(tp.partition, None)
            series.projector_partition_gone(self.spec.aggregate, self.spec.view, tp.partition)
        self._log.info("partitions revoked", partitions=[tp.partition for tp in partitions])

    def _retrying(self, call: Callable[[], T]) -> T:
        """Call until the database answers (or the projector is stopped)."""
        delay = 0.2
        while True:
            try:
                out = call()
                self._database_back()
                return out
            except RetryableError as exc:
                if self.stop_event.is_set():
                    raise
                self._database_away(exc)
                self._last_loop = time.monotonic()  # waiting on purpose is not a hung loop
                self.stop_event.wait(delay)
                delay = min(delay * 2, 5.0)

    # -- the loop --------------------------------------------------------------------------------------
    def start(self) -> None:
        """Register the revision (creating its tables) and join the group."""
        registration: Registration = self._retrying(lambda: self.store.register(self.table))
        self.state = registration.state
        self._log.info(
            "projector started",
            state=self.state,
            active_revision=registration.active_revision,
            topic=self.topic,
            database=repr(self.store),
        )
        self.group.subscribe()
        self._started = True

    @property
    def consumer(self) -> Consumer:
        """The group member's current consumer (a new one after a protocol fallback)."""
        return self.group.consumer

    def run(self) -> None:
        """Project until ``stop()`` or until a newer revision took over."""
        try:
            if not self._started:
                self.start()
            while not self.stop_event.is_set():
                try:
                    self.poll_once()
                except (KafkaFatalError, KafkaException) as exc:
                    self._renew_consumer(exc)
        finally:
            self.close()

    def _renew_consumer(self, cause: BaseException) -> None:
        """The consumer failed beyond use: once the broker answers, a new one joins the group and resumes
        from the positions in the database (what a restarted process would do)."""
        self.watch.mark_down(str(cause))
        metrics.KAFKA_RECOVERIES.labels("projector", self.spec.aggregate, "failed").inc()
        self._log.warning("kafka consumer failed; waiting for the broker to replace it", cause=str(cause))
        if not wait_for_broker(self.stop_event, self._backoff, self._broker_back, self._beat):
            return
        self.watch.mark_up()  # the consumer is replaced anyway
        self.group.renew()  # its partitions are revoked or lost through the callbacks
        self.assigned.clear()
        self.positions.clear()
        self._lag = None  # unknown until the new consumer has fetched
        self.group.subscribe()

    def _beat(self) -> None:
        self._last_loop = time.monotonic()

    def _broker_back(self) -> bool:
        return self._probe() or self._others_reach_broker()

    def _probe(self) -> bool:
        ok = self.watch.probe(self.consumer, self.topic)
        if ok:
            self._backoff.reset()
        return ok

    def _others_reach_broker(self) -> bool:
        return broker_answers(self.settings.kafka.client_config(), self.topic)

    def stop(self) -> None:
        self.stop_event.set()

    def poll_once(self) -> int:
        self._last_loop = time.monotonic()
        # librdkafka said the brokers are away: ask again. The consumer stays after an outage (it holds no
        # transaction); stranded, it is replaced.
        renew = self.watch.recheck(self._backoff, self._probe, self._others_reach_broker, renew_after_outage=False)
        if renew is not None:
            raise KafkaFatalError(renew)
        batch = self._next_batch()
        self.watch.after_poll(bool(batch), self.consumer, self.topic)
        try:
            if batch or self._markers_passed():
                self._write(batch)
            if self.state == "building":
                self._check_switch(after_batch=bool(batch))
            elif time.monotonic() >= self._next_state_check:  # an idle projector learns of a switch too
                self._next_state_check = time.monotonic() + 2.0
                self.state = self.store.revision_state(self.table)
                self._database_back()
        except RetryableError as exc:
            self._database_away(exc)
        except RevisionRetiredError as exc:
            self._retire(str(exc))
        self._update_lag()
        return len(batch)

    def _next_batch(self) -> list[Message]:
        return self.group.next_batch(self.settings.max_batch, self.settings.batch_wait_ms / 1000.0)

    def _consumer_positions(self, partitions: set[int]) -> dict[int, int]:
        """The consumer's positions: past the last record returned and any transaction markers after it."""
        if not partitions:
            return {}
        try:
            tps = self.consumer.position([TopicPartition(self.topic, p) for p in sorted(partitions)])
        except KafkaException:
            return {}
        return {tp.partition: tp.offset for tp in tps if tp.error is None and tp.offset >= 0}

    def _markers_passed(self) -> bool:
        """An idle partition whose position moved (over commit markers) is worth storing once."""
        moved = self._consumer_positions(self.assigned)
        return any(o > self.positions.get(p, -1) for p, o in moved.items())

    def _write(self, batch: list[Message]) -> None:
        started = time.monotonic()
        nexts: dict[int, int] = {}
        for msg in batch:
            p, o = cast(int, msg.partition()), cast(int, msg.offset())
            nexts[p] = max(nexts.get(p, 0), o + 1)
        for p, o in self._consumer_positions(set(nexts) | self.assigned).items():
            if p in nexts or (p in self.assigned and o > self.positions.get(p, -1)):
                nexts[p] = max(nexts.get(p, 0), o)
        try:
            try:
                result: BatchResult = self.applier.apply(self.store, cast(list[SourceMessage], batch), nexts)
            except MissingTableError:
                raise
            except ProjectionStoreError as exc:  # the database refused a statement: find the record(s) at fault
                result = self._one_by_one(batch, nexts, exc)
        except RetryableError as exc:
            self._rewind(batch, exc)
            return
        self._database_back()
        self.state = result.state
        for p, o in result.positions.items():
            if p in self.assigned:
                self.positions[p] = o
        self._m_records.inc(result.applied)
        self._m_rows.inc(result.rows)
        if batch:
            self._m_batch.observe(time.monotonic() - started)

    def _one_by_one(self, batch: list[Message], nexts: dict[int, int], refused: ProjectionStoreError) -> BatchResult:
        """Apply a refused batch a record at a time; a record the database refuses on its own is skipped
        (``foldline_skipped``, the skipped metric) and the view goes on: bad data never stops a projector."""
        self._log.warning("the database refused a batch; applying it record by record", error=str(refused))
        total = BatchResult(self.state)
        for msg in cast(list[SourceMessage], batch):
            p, o = cast(int, msg.partition()), cast(int, msg.offset())
            try:
                one = self.applier.apply(self.store, [msg], {p: o + 1})
            except MissingTableError:
                raise
            except ProjectionStoreError as exc:
                one = self.applier.skip(self.store, msg, "refused_by_database", exc)
            total = BatchResult(
                one.state,
                total.records + one.records,
                total.applied + one.applied,
                total.rows + one.rows,
                total.duplicates + one.duplicates,
                total.skipped + one.skipped,
                {**total.positions, **one.positions},
            )
        tail = self.applier.apply(self.store, [], nexts)  # positions past any commit markers after the batch
        return BatchResult(
            tail.state,
            total.records,
            total.applied,
            total.rows,
            total.duplicates,
            total.skipped,
            {**total.positions, **tail.positions},
        )

    def _rewind(self, batch: list[Message], exc: BaseException) -> None:
        """The transaction failed and rolled back: read the same records again after a pause."""
        self._log.warning("batch failed; it will be read again", error=str(exc), records=len(batch))
        if isinstance(exc, RetryableError) and not isinstance(exc, BrokerUnavailableError):
            self._database_away(exc)
        firsts: dict[int, int] = {}
        for msg in batch:
            firsts.setdefault(cast(int, msg.partition()), cast(int, msg.offset()))
        for p, offset in firsts.items():
            if p in self.assigned:
                try:
                    self.consumer.seek(TopicPartition(self.topic, p, offset))
                except KafkaException as error:  # going on would skip the batch: a new consumer starts
                    # from the positions in the database instead (``run`` replaces it)
                    raise KafkaFatalError(f"cannot rewind partition {p}: {error}") from error
        self.stop_event.wait(1.0)

    # -- rebuild ---------------------------------------------------------------------------------------
    def end_offsets(self) -> dict[int, tuple[int, int]]:
        """(low, end) of every partition of the source; end is the last stable offset (read_committed)."""
        try:
            meta = self.consumer.list_topics(self.topic, timeout=10)
            partitions = sorted(meta.topics[self.topic].partitions)
            return {
                p: self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10, cached=False)
                for p in partitions
            }
        except (KafkaException, KeyError, TypeError) as exc:
            raise BrokerUnavailableError(f"cannot read the end offsets of {self.topic}: {exc}") from exc

    def _check_switch(self, after_batch: bool) -> None:
        """After every batch (and four times a second when idle): progress, and the switch once caught up."""
        now = time.monotonic()
        if now < self._next_check and not after_batch:
            return
        self._next_check = now + 0.25
        window = self.settings.catchup_window_ms / 1000.0
        try:
            if not self._target or now - self._target_at > window:
                self._target, self._target_at = self.end_offsets(), time.monotonic()
            stored = self.store.positions(self.table.view, self.table.revision, self.topic)
            behind, share = progress(stored, self._target)
            self._progress().set(share)
            if behind > 0:
                return
            targets = {p: end for p, (_, end) in self._target.items()}
            if not self.store.switch(self.table, targets):
                return
        except RetryableError as exc:
            self._log.warning("cannot check the rebuild's progress", error=str(exc))
            return
        self.state = "active"
        self._progress().set(1.0)
        self._log.info("switched: this revision now serves the view", targets=targets)
        if self.on_switch is not None:
            self.on_switch(SwitchInfo(self.table.view, self.table.revision, targets, self._target_at))

    def _progress(self) -> Any:
        """The rebuild-progress gauge, created only for a revision that rebuilds (not one active from the start)."""
        return metrics.PROJECTION_REBUILD_PROGRESS.labels(self.spec.aggregate, self.spec.view, str(self.spec.revision))

    def _retire(self, reason: str) -> None:
        self.state = "retired"
        self.retired = True
        self._log.info("revision superseded; stopping", reason=reason)
        self.stop_event.set()

    # -- lag and shutdown ------------------------------------------------------------------------------
    def lag(self) -> int | None:
        """Records behind the end of the assigned partitions, as measured by the loop (None before that).

        Safe from any thread: it never touches the consumer (confluent-kafka can deadlock when one thread
        calls into a consumer while another sits in ``consume``).
        """
        return self._lag

    def _measure_lag(self) -> int | None:
        """None until every assigned partition's end is known: right after an assignment the consumer has
        not fetched from each partition yet, and counting those as 0 behind said "caught up" too early."""
        behind: dict[int, int] = {}
        for p in self.assigned:
            low, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
            position = self.positions.get(p, low)
            if high < 0 or position < 0:
                return None
            behind[p] = max(0, high - position)
        if self.state == "active":  # as the total: a rebuilding revision reports progress instead
            for p, n in behind.items():
                self._m_partition_lag(p).set(n)
        return sum(behind.values())

    def _m_partition_lag(self, partition: int) -> Any:
        return metrics.PROJECTION_PARTITION_LAG.labels(self.spec.aggregate, self.spec.view, str(partition))

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now >= self._next_lag and self.assigned:
            self._next_lag = now + 0.5
            self._lag = self._measure_lag()
            if self._lag is not None and self.state == "active":  # a rebuilding revision reports progress
                self._m_lag.set(self._lag)

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self.assigned.clear()
            if self._owns_store:
                self.store.close()
            self._log.info("projector stopped", state=self.state)
