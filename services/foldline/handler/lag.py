"""How far each owned commands partition is behind its end: the handler's consumer-lag metric."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaException, TopicPartition


class CommandsLag:
    """Positions of the commands partitions as of the last commit here, and the lag they give."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.positions: dict[int, int] = {}

    def of(self, consumer: Consumer, partitions: Iterable[int]) -> dict[int, int]:
        """Records behind the end of each partition (from the consumer's last fetch).

        Call from the thread that owns ``consumer`` (it may ask for committed offsets)."""
        owned = list(partitions)
        self._resume(consumer, owned)
        out = {}
        for p in owned:
            _, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
            position = self.positions.get(p)
            if high >= 0 and position is not None:
                out[p] = max(0, high - position)
        return out

    def _resume(self, consumer: Consumer, owned: list[int]) -> None:
        """A partition with no batch committed here yet counts from where this owner resumes (its committed
        offset, else the start): right after a rebalance its backlog shows, and the lag sums to the truth."""
        missing = [TopicPartition(self.topic, p) for p in owned if p not in self.positions]
        if not missing:
            return
        try:
            committed = consumer.committed(missing, timeout=2.0)
        except KafkaException:
            return  # measured on the next round
        for tp in committed:
            if tp.error is not None:
                continue
            low, _ = consumer.get_watermark_offsets(TopicPartition(self.topic, tp.partition), cached=True)
            start = tp.offset if tp.offset >= 0 else low  # no committed offset: auto.offset.reset=earliest
            if start >= 0 and tp.partition not in self.positions:
                self.positions[tp.partition] = start
