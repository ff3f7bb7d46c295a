"""Restore a partition's store from its changelog (``<agg>.snapshots``, or a policy's state topic): from
the store's offset to the end. The command handler and the policy worker share it.

The consumer reads ``read_committed``, so the end is the last stable offset: snapshots of a transaction
that is still open are not read yet. The engines therefore catch up once more when the first record
of a new partition arrives - by then the group coordinator has settled that transaction (KIP-447).
"""

from __future__ import annotations

import ctypes
import functools
import time
from collections.abc import Callable
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from foldline.errors import BrokerUnavailableError, KafkaFatalError
from foldline.store.base import StateStore

_CHUNK = 20_000
#: A restore of more records than this leaves enough freed memory behind to be worth handing back.
_SETTLE_AFTER = 10_000


def restore_partition(
    consumer: Consumer,
    topic: str,
    partition: int,
    store: StateStore,
    timeout: float = 300.0,
    on_progress: Callable[[int], None] | None = None,
    abandon: Callable[[], bool] | None = None,
) -> int:
    """Copy snapshot bytes into ``store`` until the end of the partition; returns how many were read.

    The bytes go in as they are (no decoding), so restore runs at the speed of the store and the fetch.
    ``on_progress`` hears how many changelog records are left to read, after every fetch.
    ``abandon`` (asked between fetches) ends it early with ``BrokerUnavailableError``: the broker went away.
    What was written stays, with its offset: the next restore goes on from there.
    """
    progress = on_progress or (lambda remaining: None)
    start = store.changelog_offset()
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30.0, cached=False)
    except KafkaException as exc:
        raise BrokerUnavailableError(f"cannot read the end of {topic}[{partition}]: {exc}") from exc
    if start >= high:
        progress(0)
        return 0
    start = max(start, low)
    progress(high - start)
    consumer.assign([TopicPartition(topic, partition, start)])
    restored = 0
    pending: list[tuple[bytes, bytes]] = []
    last = start - 1
    deadline = time.monotonic() + timeout
    try:
        done = False
        while not done:
            if time.monotonic() > deadline:
                raise BrokerUnavailableError(f"restoring {topic}[{partition}] took longer than {timeout:.0f}s")
            if abandon is not None and abandon():
                raise BrokerUnavailableError(f"restoring {topic}[{partition}] abandoned: the broker is away")
            for msg in consumer.consume(10_000, 0.05):  # returns early only when full: keep it short
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        done = True
                        continue
                    if error.fatal():
                        raise KafkaFatalError(f"restore of {topic}[{partition}] failed: {error.str()}")
                    continue
                key, value = msg.key(), msg.value()
                last = cast(int, msg.offset())
                if key is not None and value is not None:
                    pending.append((key, value))
                if len(pending) >= _CHUNK:
                    store.write(pending, last + 1)
                    restored += len(pending)
                    pending = []
            progress(max(0, high - last - 1))
        if pending or last >= start:
            store.write(pending, last + 1)
            restored += len(pending)
    finally:
        consumer.unassign()
    progress(0)
    return restored


def settle_after_restore(store: StateStore, restored: int) -> None:
    """After a large restore: the store gives back what the bulk write left (a RocksDB memtable, LMDB's
    touched pages), then the process's C heap its free pages (``release_heap``)."""
    if restored > _SETTLE_AFTER:
        store.release_memory()
        release_heap()


def release_heap() -> None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``).

    A restore's fetch buffers and write batches are allocated and freed in librdkafka's and RocksDB's own
    threads, whose glibc arenas keep the freed pages resident: 60-130 MB after restoring 1,000,000 snapshots
    of 540 bytes (measured). Without glibc (musl) there is nothing to call and nothing happens.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
