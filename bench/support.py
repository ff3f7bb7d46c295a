"""Shared pieces of the benchmarks: the broker, topics, a figure printer, process memory."""

from __future__ import annotations

import atexit
import os
import socket
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from foldline.topics import TopicNames, aggregate_topics, delete_topics, ensure_topics

REPO = Path(__file__).resolve().parent.parent


def baseline_code() -> list[str]:
    """``FOLDLINE_BENCH_CODE``'s directory to put before the package on PYTHONPATH: a checkout's services/
    (the directory itself when it holds ``foldline``). A checkout's root alone would not shadow this
    checkout's installed package, and the "baseline" would silently be this code."""
    code = os.environ.get("FOLDLINE_BENCH_CODE")
    if not code:
        return []
    services = Path(code) / "services"
    return [str(services if (services / "foldline").is_dir() else Path(code))]


def broker() -> str:
    preset = os.environ.get("FOLDLINE_KAFKA_BOOTSTRAP")
    if preset:
        return preset
    from foldline.dev.kafka import DevKafka

    return DevKafka().start()


#: (bootstrap, aggregate) of every aggregate this benchmark process made topics for.
_created: list[tuple[str, str]] = []


def new_aggregate(bootstrap: str, partitions: int, prefix: str = "bench") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ensure_topics(AdminClient({"bootstrap.servers": bootstrap}), aggregate_topics(name, partitions))
    if not _created and not os.environ.get("FOLDLINE_BENCH_KEEP_TOPICS"):
        atexit.register(delete_created_topics)
    _created.append((bootstrap, name))
    return name


def delete_created_topics() -> None:
    """A benchmark's topics go when its process ends (``FOLDLINE_BENCH_KEEP_TOPICS=1`` keeps them): a
    development broker otherwise keeps every run's records, gigabytes after a day of runs. Topics other
    tools made (Quix's changelogs) stay."""
    while _created:
        bootstrap, name = _created.pop()
        try:
            delete_topics({"bootstrap.servers": bootstrap}, TopicNames(name).all(), timeout=10.0)
        except Exception as exc:  # the broker may be gone already: the run's figures are printed anyway
            print(f"# could not delete the topics of {name}: {exc}", flush=True)


def figure(name: str, value: float, unit: str, note: str = "") -> None:
    """One figure per line: ``name value unit (note)``; parsable and readable."""
    print(f"{name:<48} {value:>14,.1f} {unit:<14} {note}".rstrip(), flush=True)


def pace() -> str:
    """How fast this machine runs Python right now: the CPU time of a fixed loop on one core. On the
    development VM the same loop's CPU time varied by up to 1.8x within an hour, with no steal time
    reported: figures from different hours do not compare, those of one run (or interleaved runs) do."""
    started = time.process_time()
    x = 0
    for i in range(1_000_000):
        x += i * i % 7
    return f"a fixed Python loop took {(time.process_time() - started) * 1000:.0f} ms of CPU"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} on {os.cpu_count()} cores"


def rss_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def produce_all(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]], **config: Any) -> float:
    """Produce (key, value) records as fast as the client goes; returns the seconds until all are acked."""
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,  # each partition's order kept on retries
            "queue.buffering.max.messages": 1_000_000,
            "batch.num.messages": 10_000,
            **config,
        }
    )
    started = time.perf_counter()
    for key, value in records:
        while True:
            try:
                p.produce(topic, value, key)
                break
            except BufferError:  # the local queue is full: let librdkafka send, then go on
                p.poll(0.01)
    p.flush(300)
    return time.perf_counter() - started
