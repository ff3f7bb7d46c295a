"""Standby replicas (Kafka Streams' ``num.standby.replicas``): warm copies of other members' stores.

A ``StandbyKeeper`` runs one thread that owns its own Kafka clients: a consumer that reads
``<agg>.snapshots`` by hand (no group, ``read_committed``) and an admin client that describes the handler
group. From that description it computes the partitions this process stands by for
(``foldline.handler.placement``) and keeps a store of each one current, in the very directory and format
the command handler uses for an assigned partition (``<state_dir>/<agg>/partition-<n>``, snapshot bytes
plus the changelog offset they reflect). When the partition is assigned to this process, the handler's
ordinary restore then reads only the tail past that offset.

The store has one writer at a time. The handler asks ``release(p)`` before it opens partition ``p``'s store:
from then on the keeper neither opens it nor writes to it, and ``release`` returns only once the keeper
has closed it. ``returned(p)``, called after the handler closed its store (revoke), lets the keeper stand
by for ``p`` again. Only the keeper's thread touches its Kafka clients and its stores.

The workers of a pod share the directories (``foldline.store.lock``): the keeper opens a store only if no
one holds its lock (a sibling worker owning the partition), never waiting, and it never stands by for a
partition a sibling worker owns (``pod_members``): that store is already in the pod, and holding it would
make the sibling wait for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, cast

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from foldline.handler.engine import CommandHandler
from foldline.handler.placement import standby_partitions
from foldline.observability import metrics, series
from foldline.outage import Backoff
from foldline.store.base import ClosingStore, StateStore
from foldline.store.lock import StoreLockedError

log = structlog.get_logger("foldline.handler.standby")

#: How often the keeper asks the broker who owns which partition (a rebalance shows up within this).
DESCRIBE_EVERY_S = 5.0
#: The longest the keeper's loop waits for records: ``release`` waits at most about this plus one write.
_POLL_S = 0.1
_LAG_EVERY_S = 1.0


class StandbyKeeper:
    def __init__(
        self,
        aggregate: str,
        *,
        replicas: int,
        instance_id: str,
        group: str,
        commands_topic: str,
        snapshots_topic: str,
        consumer_factory: Callable[[], Consumer],
        admin_factory: Callable[[], AdminClient],
        open_store: Callable[[int], StateStore],
        describe_every: float = DESCRIBE_EVERY_S,
        pod_members: frozenset[str] = frozenset(),
    ) -> None:
        self.aggregate = aggregate
        self.replicas = replicas
        self.instance_id = instance_id
        self.group = group
        self.commands_topic = commands_topic
        self.snapshots_topic = snapshots_topic
        self._new_consumer = consumer_factory
        self._new_admin = admin_factory
        self._open_store = open_store
        self._describe_every = describe_every
        self._siblings = pod_members - {instance_id}
        self._busy_until: dict[int, float] = {}  # held by another owner: try again after this (keeper's thread)
        self._lock = threading.Condition()
        self._owned: set[int] = set()  # partitions the handler has (or is about to have) open: never touched
        self._open: set[int] = set()  # partitions whose store the keeper holds; guarded by _lock
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"standby-{aggregate}", daemon=True)
        # Only the keeper's thread uses these:
        self._stores: dict[int, StateStore] = {}
        self._target: frozenset[int] = frozenset()
        self._m_partitions = metrics.STANDBY_PARTITIONS.labels(aggregate)

    # -- the handler's side (any thread) -----------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def release(self, partition: int) -> None:
        """The handler takes ``partition``: stop standing by for it; returns once its store is closed."""
        with self._lock:
            self._owned.add(partition)
            while partition in self._open and self._thread.is_alive():
                self._lock.wait(1.0)

    def returned(self, partition: int) -> None:
        """The handler closed ``partition``'s store: the keeper may stand by for it again."""
        with self._lock:
            self._owned.discard(partition)

    def standing_by(self) -> frozenset[int]:
        """The partitions whose store the keeper holds now."""
        with self._lock:
            return frozenset(self._open)

    # -- the keeper's thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = Backoff(first=1.0, cap=30.0)
        while not self._stopping.is_set():
            try:
                self._follow_until_stopped()
            except Exception as exc:  # a standby is an optimisation: whatever fails, the handler goes on
                log.warning(
                    "standby failed; starting it over",
                    aggregate=self.aggregate,
                    error=f"{type(exc).__name__}: {exc}",
                )
                self._stopping.wait(backoff.next())

    def _follow_until_stopped(self) -> None:
        consumer = self._new_consumer()
        admin = self._new_admin()
        described: Future[Any] | None = None
        next_describe = 0.0
        next_lag = 0.0
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                if described is None and now >= next_describe:
                    described = admin.describe_consumer_groups([self.group], request_timeout=5)[self.group]
                    next_describe = now + self._describe_every
                if described is not None and described.done():
                    self._take_description(described)
                    described = None
                self._reconcile(consumer)
                self._copy(consumer.consume(10_000, _POLL_S) if self._stores else self._idle())
                if now >= next_lag:
                    self._measure_lag(consumer)
                    next_lag = now + _LAG_EVERY_S
        finally:
            self._close_all(consumer)
            consumer.close()

    def _idle(self) -> list[Message]:
        self._stopping.wait(_POLL_S)
        return []

    def _take_description(self, described: Future[Any]) -> None:
        try:
            group = described.result()
        except KafkaException as exc:  # the coordinator is loading or away: keep what we stand by for
            log.debug("cannot describe the handler group", group=self.group, error=str(exc))
            return
        owners: dict[str, list[int]] = {}
        for member in group.members:
            name = member.group_instance_id or member.client_id
            partitions = [tp.partition for tp in member.assignment.topic_partitions if tp.topic == self.commands_topic]
            owners.setdefault(str(name), []).extend(partitions)
        target = standby_partitions(self.instance_id, owners, self.replicas, self._siblings)
        if target != self._target:
            log.info("standby partitions", aggregate=self.aggregate, partitions=sorted(target))
        self._target = target

    def _reconcile(self, consumer: Consumer) -> None:
        """Close the stores the handler asked for or the ring no longer wants; open the ones it now wants."""
        with self._lock:
            drop = [p for p in self._stores if p in self._owned or p not in self._target]
            add = [p for p in sorted(self._target) if p not in self._stores and p not in self._owned]
            self._open.update(add)  # reserved under the lock: a release() from now on waits for the close
        if drop:
            consumer.incremental_unassign([TopicPartition(self.snapshots_topic, p) for p in drop])
            for p in drop:
                self._close(p)
        if add:
            opened = []
            for p in add:
                try:
                    if time.monotonic() < self._busy_until.get(p, 0.0):
                        raise StoreLockedError("held by another owner when last tried")
                    try:
                        store = self._open_store(p)
                    except StoreLockedError:
                        self._busy_until[p] = time.monotonic() + self._describe_every
                        raise
                except StoreLockedError:  # another worker of the pod has it: not ours to keep now
                    with self._lock:
                        self._open.discard(p)
                        self._lock.notify_all()
                    continue
                except BaseException:
                    with self._lock:
                        self._open.difference_update(q for q in add if q not in self._stores)
                        self._lock.notify_all()
                    raise
                self._busy_until.pop(p, None)
                self._stores[p] = store
                opened.append(TopicPartition(self.snapshots_topic, p, store.changelog_offset()))
                metrics.STANDBY_RECORDS.labels(self.aggregate, str(p))
            if opened:
                consumer.incremental_assign(opened)
                log.info("standing by", aggregate=self.aggregate, partitions=[tp.partition for tp in opened])
        self._m_partitions.set(len(self._stores))

    def _copy(self, messages: list[Message]) -> None:
        """Write what was read, per partition, with the offset after its last record (atomically)."""
        pending: dict[int, list[tuple[bytes, bytes]]] = {}
        last: dict[int, int] = {}
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                continue
            p = cast(int, msg.partition())
            if p not in self._stores:  # fetched before it was released: the handler's now
                continue
            last[p] = cast(int, msg.offset())
            key, value = msg.key(), msg.value()
            if key is not None and value is not None:
                pending.setdefault(p, []).append((key, value))
        for p, offset in last.items():
            items = pending.get(p, [])
            self._stores[p].write(items, offset + 1)
            if items:
                metrics.STANDBY_RECORDS.labels(self.aggregate, str(p)).inc(len(items))

    def _measure_lag(self, consumer: Consumer) -> None:
        if not self._stores:
            return
        try:
            positions = consumer.position([TopicPartition(self.snapshots_topic, p) for p in self._stores])
            for tp in positions:
                if tp.partition not in self._stores:
                    continue
                position = tp.offset if tp.offset >= 0 else self._stores[tp.partition].changelog_offset()
                _, high = consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0:
                    metrics.STANDBY_LAG.labels(self.aggregate, str(tp.partition)).set(max(0, high - position))
        except KafkaException as exc:
            if exc.args and isinstance(exc.args[0], KafkaError) and exc.args[0].fatal():
                raise
            log.debug("cannot measure standby lag", error=str(exc))

    def _close(self, partition: int) -> None:
        store = self._stores.pop(partition, None)
        try:
            if store is not None:
                store.close()
        finally:
            series.standby_partition_gone(self.aggregate, partition)
            with self._lock:
                self._open.discard(partition)
                self._lock.notify_all()

    def _close_all(self, consumer: Consumer) -> None:
        try:
            if self._stores:
                consumer.incremental_unassign([TopicPartition(self.snapshots_topic, p) for p in self._stores])
        except KafkaException:
            pass  # the consumer is closed next anyway
        for p in list(self._stores):
            try:
                self._close(p)
            except Exception as exc:
                log.warning("closing a standby store failed", partition=p, error=str(exc))
        with self._lock:
            self._open.clear()
            self._lock.notify_all()
        self._m_partitions.set(0)


class HandedOverStore(ClosingStore):
    """The handler's store of a partition the keeper may stand by for: opened after ``release``, and closing
    it hands the partition back (``returned``), so the keeper and the handler never hold it together."""

    def __init__(self, store: StateStore, keeper: StandbyKeeper, partition: int) -> None:
        super().__init__(store)
        self._keeper = keeper
        self._partition = partition

    def after_close(self) -> None:
        self._keeper.returned(self._partition)


def handed_over(keeper: StandbyKeeper, open_store: Callable[[int], StateStore]) -> Callable[[int], StateStore]:
    """``open_store`` for the handler's own partitions: the keeper lets go of a partition before it opens."""

    def open_owned(partition: int) -> StateStore:
        keeper.release(partition)
        try:
            store = open_store(partition)
        except BaseException:
            keeper.returned(partition)
            raise
        return HandedOverStore(store, keeper, partition)

    return open_owned


class StandbyCommandHandler(CommandHandler):
    """A command handler whose process also keeps standby stores: the keeper runs while the handler runs."""

    def __init__(self, *args: Any, keeper: StandbyKeeper, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keeper = keeper

    def run(self) -> None:
        self.keeper.start()
        try:
            super().run()
        finally:
            self.keeper.stop()
            self.keeper.join(30.0)

    def stop(self) -> None:
        super().stop()
        self.keeper.stop()
