"""Where a view stands: active and building revisions, rebuild progress and lag.

Computed from the catalog and positions in the projection database and the end offsets of the
source topics in Kafka, so any process (the CLI, the operator) can ask without the projector's help.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from foldline.clients import reader_config
from foldline.errors import BrokerUnavailableError
from foldline.projection.base import SqlStore
from foldline.settings import KafkaSettings
from foldline.topics import STATUS_GROUP, progress

#: topic -> {partition: (low, end)}; end is the last stable offset (read_committed).
EndOffsets = Callable[[str], dict[int, tuple[int, int]]]


@dataclass(frozen=True)
class RevisionStatus:
    revision: int
    state: str
    source: str
    topic: str
    behind: int | None
    progress: float | None
    positions: dict[int, int]


@dataclass(frozen=True)
class ViewStatus:
    view: str
    aggregate: str
    active_revision: int | None
    building_revision: int | None
    lag: int | None
    progress: float | None
    revisions: tuple[RevisionStatus, ...]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["revisions"] = [
            {**r, "positions": {str(k): v for k, v in r["positions"].items()}} for r in data["revisions"]
        ]
        return data


def view_status(store: SqlStore, view: str, end_offsets: EndOffsets | None) -> ViewStatus:
    """The status of one view; ``behind``/``lag``/``progress`` are None without ``end_offsets``."""
    info = store.view_info(view)
    revisions = []
    ends_cache: dict[str, dict[int, tuple[int, int]]] = {}
    for rev in info.revisions:
        if rev.state == "retired":
            continue
        behind: int | None = None
        share: float | None = None
        if end_offsets is not None:
            ends = ends_cache.get(rev.table.topic)
            if ends is None:
                ends = ends_cache[rev.table.topic] = end_offsets(rev.table.topic)
            behind, share = progress(rev.positions, ends)
        revisions.append(
            RevisionStatus(
                rev.revision, rev.state, rev.table.source, rev.table.topic, behind, share, dict(rev.positions)
            )
        )
    active = next((r for r in revisions if r.state == "active"), None)
    building = max((r for r in revisions if r.state == "building"), key=lambda r: r.revision, default=None)
    aggregate = next(
        (r.table.aggregate for r in info.revisions if r.revision == info.active_revision),
        info.revisions[-1].table.aggregate if info.revisions else "",
    )
    return ViewStatus(
        view,
        aggregate,
        info.active_revision,
        building.revision if building else None,
        active.behind if active else None,
        building.progress if building else None,
        tuple(revisions),
    )


@contextmanager
def kafka_end_offsets(kafka: KafkaSettings, timeout: float = 10.0) -> Iterator[EndOffsets]:
    """An ``EndOffsets`` reading the broker (read_committed), closed on exit."""
    consumer = Consumer(reader_config(kafka, STATUS_GROUP))

    def ends(topic: str) -> dict[int, tuple[int, int]]:
        try:
            meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
            if meta.error is not None:
                raise BrokerUnavailableError(f"cannot describe {topic}: {meta.error}")
            return {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
                for p in sorted(meta.partitions)
            }
        except (KafkaException, KeyError) as exc:
            raise BrokerUnavailableError(f"cannot read the end offsets of {topic}: {exc}") from exc

    try:
        yield ends
    finally:
        consumer.close()


def format_table(statuses: list[ViewStatus]) -> str:
    """One line per view: view, active revision, building revision, progress %, lag."""
    rows = [("VIEW", "AGGREGATE", "ACTIVE", "BUILDING", "PROGRESS", "LAG")]
    for s in statuses:
        rows.append(
            (
                s.view,
                s.aggregate,
                _text(s.active_revision),
                _text(s.building_revision),
                "-" if s.progress is None else f"{s.progress * 100:.1f}%",
                _text(s.lag),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _text(value: int | None) -> str:
    return "-" if value is None else str(value)
