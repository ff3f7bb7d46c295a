"""Command-handler benchmarks against the real broker: throughput, latency, restore, memory.

Throughput (``bench.throughput``) is wall time from the handler's launch until every result is readable
``read_committed``, on the invoices workload mix, checked for correctness, beside the broker's raw limit
measured the same way. Latency is command send → result readable ``read_committed`` at a fixed offered
rate, open loop. Never fails on a time.
"""

from __future__ import annotations

import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from bench.procs import descendants
from bench.support import REPO, broker, figure, free_port, load, new_aggregate, produce_all, rss_mb, wait_until
from bench.throughput import bench_throughput, check_foldline
from bench.workload import Workload, invoices_workload
from foldline.consumer import take
from foldline.records import CommandEnvelope, CommandResult, SnapshotRecord
from foldline.store.base import open_state_store, store_kinds
from foldline.store.restore import restore_partition
from foldline.topics import TopicNames


def line(n: int) -> dict[str, object]:
    return {"line_id": f"l{n}", "description": "Consulting, senior engineer", "quantity": 3, "unit_price": "120.00"}


def handler_log(state: Path, port: int) -> Path:
    """Where ``handler_process`` writes the handler's output (JSON lines)."""
    return state.parent / f"handler-{port}.log"


def handler_process(bootstrap: str, aggregate: str, state: Path, port: int, **env: str) -> subprocess.Popen[bytes]:
    environ = {
        **os.environ,
        "FOLDLINE_KAFKA_BOOTSTRAP": bootstrap,
        "FOLDLINE_STATE_DIR": str(state),
        "FOLDLINE_HTTP_PORT": str(port),
        "FOLDLINE_INSTANCE_ID": uuid.uuid4().hex[:8],
        "FOLDLINE_LOG_FORMAT": "json",
        "PYTHONPATH": str(REPO),
        **env,
    }
    log = handler_log(state, port).open("ab")
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "foldline.cli",
                "command-handler",
                "--aggregate",
                f"tests.named_invoices:{aggregate.replace('-', '_')}",
            ],
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


def commands_done(port: int, proc: subprocess.Popen[bytes] | None = None) -> float:
    if proc is not None and proc.poll() is not None:
        raise RuntimeError(f"the handler process exited with {proc.returncode}; see its log")
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return -1.0
    return sum(float(v) for v in re.findall(r"^foldline_commands_total\{[^}]*\} (\S+)$", text, re.M))


def histogram(port: int, name: str) -> tuple[list[tuple[float, float]], float, float]:
    """Cumulative buckets, sum and count of one histogram on a handler's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    pattern = rf'^{name}_bucket{{[^}}]*le="([^"]+)"}} (\S+)$'
    buckets = [(float(le), float(v)) for le, v in re.findall(pattern, text, re.M)]
    total = sum(float(v) for v in re.findall(rf"^{name}_sum{{[^}}]*}} (\S+)$", text, re.M))
    count = sum(float(v) for v in re.findall(rf"^{name}_count{{[^}}]*}} (\S+)$", text, re.M))
    return buckets, total, count


def bench_latency(bootstrap: str, tmp: Path, offered: int, seconds: float = 8.0) -> None:
    """The invoices workload mix sent open loop at ``offered`` commands/s to a handler with default settings;
    p50/p99 from each command's first send to its result readable ``read_committed``; then the check."""
    partitions = 3
    aggregate = new_aggregate(bootstrap, partitions, "lat")
    names = TopicNames(aggregate)
    warm = invoices_workload(100, partitions, seed=offered, prefix="warm")
    workload = invoices_workload(max(1, round(offered * seconds / 5.7)), partitions, seed=offered + 1, prefix="lat")
    port = free_port()
    proc = handler_process(bootstrap, aggregate, tmp / f"lat-{offered}", port)  # default settings
    sent: dict[str, float] = {}
    answered: set[str] = set()
    latencies: list[float] = []
    results = [0]
    done = threading.Event()

    def read_results() -> None:
        c = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": uuid.uuid4().hex,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 5,
            }
        )
        c.assign([TopicPartition(names.results, p, 0) for p in range(partitions)])
        while not done.is_set():
            for msg in take(c, 1000, 0.05):
                if msg.error() is None:
                    at = time.perf_counter()
                    results[0] += 1
                    result = CommandResult.from_bytes(msg.value())
                    if result.command_id in sent and result.command_id not in answered:
                        answered.add(result.command_id)
                        latencies.append(at - sent[result.command_id])
        c.close()

    # Idempotent (each partition's order kept on retries), placed by murmur2 as the gateway's producer does.
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "enable.idempotence": True})
    try:
        wait_until(lambda: commands_done(port, proc) >= 0, 60)
        reader = threading.Thread(target=read_results, daemon=True)
        reader.start()
        # Warm up on other invoices: the partitions assigned and the first transactions behind us.
        for planned in warm.commands:
            p.produce(names.commands, planned.value, planned.key, partition=planned.partition)
        p.flush(30)
        wait_until(lambda: results[0] >= len(warm), 120)
        interval = 1.0 / offered
        start = time.perf_counter()
        for n, planned in enumerate(workload.commands):  # open loop: the schedule does not wait for answers
            due = start + n * interval
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent.setdefault(planned.command_id, time.perf_counter())  # a resubmission is timed from the first
            p.produce(names.commands, planned.value, planned.key, partition=planned.partition)
            p.poll(0)
        p.flush(30)
        wait_until(lambda: results[0] >= len(warm) + len(workload), 120)
        _, txn_sum, txn_count = histogram(port, "foldline_transaction_duration_seconds")
        figure(
            f"  transaction mean at {offered:,}/s",
            txn_sum / max(txn_count, 1) * 1000,
            "ms",
            f"{txn_count:,.0f} transactions",
        )
    finally:
        done.set()
        proc.terminate()
        proc.wait(60)
    problems = check_foldline(bootstrap, names, Workload(warm.commands + workload.commands), partitions)
    note = f"INCORRECT: {problems.count} problems: {problems.summary()}" if problems.count else "checked"
    ordered = sorted(latencies)
    if not ordered:
        figure(f"latency at {offered}/s", float("nan"), "ms", "no results")
        return
    q = statistics.quantiles(ordered, n=100)
    figure(f"command→result p50 at {offered:,}/s offered", q[49] * 1000, "ms", f"{len(ordered):,} commands, {note}")
    figure(f"command→result p99 at {offered:,}/s offered", q[98] * 1000, "ms")


def snapshot_bytes(i: int) -> bytes:
    state = {
        "status": "sent",
        "customer": f"customer-{i % 5000}",
        "currency": "EUR",
        "issue_date": "2026-11-01",
        "due_date": "2026-12-01",
        "lines": [line(n) for n in range(2)],
        "paid": "0",
        "payments": [],
    }
    recent = ({"command_id": uuid.uuid4().hex, "status": "accepted", "version": 3},)
    return SnapshotRecord(f"inv-{i}", 3, state, 1, recent).to_bytes()  # type: ignore[arg-type]


def bench_restore_and_memory(bootstrap: str, tmp: Path, aggregates: int = 1_000_000) -> None:
    aggregate = new_aggregate(bootstrap, 1, "rss")
    names = TopicNames(aggregate)
    values = [snapshot_bytes(i) for i in range(aggregates)]
    keys = [f"inv-{i}".encode() for i in range(aggregates)]
    produce_all(bootstrap, names.snapshots, zip(keys, values, strict=True))
    size = sum(map(len, values)) / aggregates
    del values, keys
    figure("snapshots on the changelog", aggregates, "records", f"{size:.0f} bytes each")
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-restore",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.max.bytes": 64 << 20,
            "max.partition.fetch.bytes": 16 << 20,
        }
    )
    for kind in store_kinds():
        store = open_state_store(kind, tmp / f"restore-{kind}")
        started = time.perf_counter()
        n = restore_partition(c, names.snapshots, 0, store)
        elapsed = time.perf_counter() - started
        store.close()
        figure(f"restore into {kind}", n / elapsed, "snapshots/s", f"{n:,} in {elapsed:.1f}s")
    c.close()
    for kind in store_kinds():
        handler_memory(bootstrap, aggregate, aggregates, kind, tmp)
    handler_memory(bootstrap, aggregate, aggregates, "rocksdb", tmp, workers=2)


def handler_memory(bootstrap: str, aggregate: str, aggregates: int, kind: str, tmp: Path, workers: int = 1) -> None:
    """A real handler owning every aggregate: restore, then commands on random aggregates. With workers, the
    RSS is summed over the supervisor and its workers (the pod's memory)."""
    names = TopicNames(aggregate)
    port = free_port()
    proc = handler_process(
        bootstrap, aggregate, tmp / f"rss-{kind}-{workers}", port, FOLDLINE_STORE=kind, FOLDLINE_WORKERS=str(workers)
    )
    try:
        wait_until(lambda: commands_done(port, proc) >= 0, 600)
        p = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 5,
                "partitioner": "murmur2_random",
                "enable.idempotence": True,
            }
        )
        for n in range(20_000):
            aggregate_id = f"inv-{random.randrange(aggregates)}"
            envelope = CommandEnvelope(uuid.uuid4().hex, aggregate_id, "AddLineItem", line(100 + n))  # type: ignore[arg-type]
            p.produce(names.commands, envelope.to_bytes(), aggregate_id.encode())
        p.flush(30)
        wait_until(lambda: commands_done(port, proc) >= 20_000, 600)
        if workers == 1:
            mem = rss_mb(proc.pid)
            figure(
                f"handler RSS, {aggregates:,} aggregates, {kind}",
                mem["VmRSS"],
                "MB",
                f"anon {mem['RssAnon']:.0f} MB, file-backed {mem['RssFile']:.0f} MB, peak {mem['VmHWM']:.0f} MB",
            )
        else:
            pids = descendants(proc.pid)
            mems = [rss_mb(pid) for pid in pids]
            figure(
                f"handler RSS, {aggregates:,} aggregates, {kind}, {workers} workers",
                sum(m["VmRSS"] for m in mems),
                "MB",
                f"summed over {len(pids)} processes: " + ", ".join(f"{m['VmRSS']:.0f}" for m in mems),
            )
    finally:
        proc.terminate()
        proc.wait(120)


def main() -> None:
    bootstrap = broker()
    print(f"# command handler — {load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="foldline-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        bench_throughput(bootstrap, tmp)
        for offered in (500, 1000):
            bench_latency(bootstrap, tmp, offered)
        aggregates = int(os.environ.get("FOLDLINE_BENCH_AGGREGATES", "1000000"))
        bench_restore_and_memory(bootstrap, tmp, aggregates)
    print(f"# done — {load()}", flush=True)


if __name__ == "__main__":
    main()
