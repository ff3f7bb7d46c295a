"""One ``/metrics`` for a pod whose engine runs in several worker processes: their expositions, merged.

Each worker exports its own series; the parent sums samples with the same name and labels. foldline's
series add up by design (counters and histograms per aggregate, gauges per partition, which one worker
owns at a time, or per process such as assigned partitions). Of the client library's process and
platform series, memory, descriptors and CPU add up, a start time is the earliest, the rest the largest.

A worker that is restarted starts its counters from zero; the parent keeps what an exited worker had
counted (``retire``), so the pod's counters never go backwards, as Prometheus' ``rate()`` expects.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

_SummedGauges = ("process_resident_memory_bytes", "process_virtual_memory_bytes", "process_open_fds")
_Key = tuple[str, tuple[tuple[str, str], ...]]


class Families:
    """Parsed metric families: name → (help, type, {(sample name, labels): value})."""

    def __init__(self) -> None:
        self.meta: dict[str, tuple[str, str]] = {}
        self.samples: dict[str, dict[_Key, float]] = {}

    @classmethod
    def parse(cls, text: str) -> Families:
        out = cls()
        for family in text_string_to_metric_families(text):
            out.meta[family.name] = (family.documentation, family.type)
            values = out.samples.setdefault(family.name, {})
            for s in family.samples:
                values[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def add(self, other: Families, *, cumulative_only: bool = False) -> None:
        """Merge ``other`` into these; ``cumulative_only`` takes only what never goes down (counters,
        histograms), as a retired worker's contribution."""
        for name, (doc, kind) in other.meta.items():
            if cumulative_only and kind not in ("counter", "histogram"):
                continue
            self.meta.setdefault(name, (doc, kind))
            mine = self.samples.setdefault(name, {})
            for key, value in other.samples.get(name, {}).items():
                mine[key] = _combine(name, kind, key[0], mine.get(key), value)

    def render(self) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        return generate_latest(registry)


def merge(parts: Iterable[Families]) -> Families:
    out = Families()
    for part in parts:
        out.add(part)
    return out


def _combine(family: str, kind: str, sample: str, old: float | None, new: float) -> float:
    if old is None:
        return new
    if sample.endswith("_created") or "start_time" in sample:
        return min(old, new)
    if kind == "gauge" and not family.startswith("foldline_") and family not in _SummedGauges:
        return max(old, new)  # python_info, process_max_fds: the same in every worker
    return old + new


class _Collector:
    def __init__(self, families: Families) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        for name, (doc, kind) in self._families.meta.items():
            metric = Metric(name, doc, kind)
            for (sample, labels), value in self._families.samples.get(name, {}).items():
                metric.add_sample(sample, dict(labels), value)
            yield metric
