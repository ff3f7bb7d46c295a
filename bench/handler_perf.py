"""Latency and worker scaling of one handler process, measured the way a client sees it.

    FOLDLINE_KAFKA_BOOTSTRAP=... python -m bench.handler_perf latency --rate 500 --rate 1000 [--workers 1]
    FOLDLINE_KAFKA_BOOTSTRAP=... python -m bench.handler_perf throughput --workers 1 --workers 2

``latency``: an open-loop idempotent producer offers ``rate`` commands/s; each command's latency runs
from its send to its result readable ``read_committed``; first through ``bench.raw_pipeline`` (the
broker's floor: the same loop with no domain work, same rate, same kind of records; ``--no-raw`` skips
it), then through the handler. ``throughput``: a backlog of commands, then
the handler process is launched; wall time from the launch, and first → last result, until every result
is readable ``read_committed``, checked: one result per command id. The machine's load average is
printed beside every figure (other work on the machine skews them). Never asserted.
``FOLDLINE_BENCH_CODE=<dir>`` runs the handler from another checkout's ``services/`` (a baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from bench import raw_pipeline
from bench.handler import handler_log, handler_process
from bench.support import REPO, baseline_code, broker, figure, free_port, load, new_aggregate, wait_until
from foldline.consumer import take
from foldline.handler.engine import SLOW_TXN_S
from foldline.records import CommandEnvelope, CommandResult
from foldline.topics import TopicNames

CREATE = {"customer": "ACME Corporation", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}


def line(n: int) -> dict[str, object]:
    return {"line_id": f"l{n}", "description": "Consulting, senior engineer", "quantity": 3, "unit_price": "120.00"}


def producer(bootstrap: str) -> Producer:
    # Idempotent: retries never reorder a partition's commands.
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "enable.idempotence": True,
                     "partitioner": "murmur2_random", "queue.buffering.max.messages": 1_000_000})  # fmt: skip


class Results:
    """Reads the results topic ``read_committed`` in a thread; the time each command id's result shows."""

    def __init__(
        self, bootstrap: str, topic: str, partitions: int, command_id: Callable[[bytes | None], str] | None = None
    ) -> None:
        self.command_id = command_id or (lambda value: CommandResult.from_bytes(value).command_id)
        self.seen: dict[str, float] = {}
        self.duplicates = 0
        self.first = 0.0
        self._stop = threading.Event()
        self._c = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                            "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                            "enable.auto.commit": False, "fetch.wait.max.ms": 5})  # fmt: skip
        self._c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in take(self._c, 2000, 0.02):
                if msg.error() is None:
                    at = time.perf_counter()
                    cid = self.command_id(msg.value())
                    if cid in self.seen:
                        self.duplicates += 1
                    else:
                        self.seen[cid] = at
                        self.first = self.first or at
        self._c.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def handler_env(workers: int) -> dict[str, str]:
    env = {"FOLDLINE_WORKERS": str(workers)}
    code = baseline_code()  # another checkout's services/, to measure a baseline
    if code:
        env["PYTHONPATH"] = os.pathsep.join([*code, str(REPO)])
    return env


def offer(p: Producer, topic: str, rate: int, seconds: float) -> dict[str, float]:
    """AddLineItem commands at ``rate``/s on the 500 invoices, open loop (the schedule never waits for
    answers); returns each command id's send time."""
    sent: dict[str, float] = {}
    start = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        aggregate_id = f"inv-{random.randrange(500)}"
        env = CommandEnvelope(uuid.uuid4().hex, aggregate_id, "AddLineItem", line(n))  # type: ignore[arg-type]
        sent[env.command_id] = time.perf_counter()
        p.produce(topic, env.to_bytes(), aggregate_id.encode())
        p.poll(0)
    p.flush(30)
    return sent


def rebalances(port: int) -> float:
    """Partitions assigned, revoked or lost so far, from the pod's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(v) for v in re.findall(r"^foldline_rebalances_total\{[^}]*\} (\S+)$", text, re.M))


def counters(port: int) -> tuple[float, tuple[float, float]]:
    """Partition moves so far and the transaction histogram's (sum, count), from the pod's /metrics."""
    return rebalances(port), summed(port, "foldline_transaction_duration_seconds")


def summed(port: int, histogram: str) -> tuple[float, float]:
    """A histogram's sum and count on the pod's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = sum(float(v) for v in re.findall(rf"^{histogram}_sum{{[^}}]*}} (\S+)$", text, re.M))
    count = sum(float(v) for v in re.findall(rf"^{histogram}_count{{[^}}]*}} (\S+)$", text, re.M))
    return total, count


def raw_process(bootstrap: str, names: TopicNames, partitions: int, workers: int) -> subprocess.Popen[bytes]:
    """``bench.raw_pipeline`` in the handler's place: the same consume, three produces and transaction
    per batch with no domain work, each command's bytes copied to the result, event and snapshot topics."""
    argv = raw_pipeline.command_line(bootstrap, names, partitions, workers)
    return subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL)


def envelope_id(value: bytes | None) -> str:
    return CommandEnvelope.from_bytes(value).command_id


def latency(
    bootstrap: str,
    tmp: Path,
    rate: int,
    seconds: float,
    workers: int,
    partitions: int,
    warmup: float = 5.0,
    raw: bool = False,
) -> list[float]:
    """Each command's send → its result readable ``read_committed``, sorted (seconds); with ``raw`` through
    ``bench.raw_pipeline`` instead of the handler: the broker's own floor for the same loop."""
    aggregate = new_aggregate(bootstrap, partitions, "lat")
    names = TopicNames(aggregate)
    results = Results(bootstrap, names.results, partitions, envelope_id if raw else None)
    port = free_port()
    state = tmp / f"lat-{rate}-{workers}"
    if raw:
        proc = raw_process(bootstrap, names, partitions, workers)
    else:
        proc = handler_process(bootstrap, aggregate, state, port, **handler_env(workers))
    p = producer(bootstrap)
    try:
        warm = [CommandEnvelope(uuid.uuid4().hex, f"inv-{i}", "CreateInvoice", CREATE) for i in range(500)]  # type: ignore[arg-type]
        for env in warm:
            p.produce(names.commands, env.to_bytes(), env.aggregate_id.encode())
        p.flush(30)
        if not wait_until(lambda: all(e.command_id in results.seen for e in warm), 120):
            raise RuntimeError("the handler did not answer the warm-up commands")
        # Discarded: the workers' group settles (a worker that joins last takes its partitions now).
        offer(p, names.commands, rate, warmup)
        start = None if raw else counters(port)  # the raw pipeline has no /metrics
        sent = offer(p, names.commands, rate, seconds)
        wait_until(lambda: all(c in results.seen for c in sent), 60)
        end = None if raw else counters(port)
    finally:
        results.stop()
        proc.terminate()
        proc.wait(60)
    lat = sorted(results.seen[c] - t for c, t in sent.items() if c in results.seen)
    q = statistics.quantiles(lat, n=100)
    if start is None or end is None:
        note = f"{len(lat):,}/{len(sent):,} results, {workers} process(es), {load()}"
        figure(f"raw broker pipeline p50 at {rate:,}/s", q[49] * 1000, "ms", note)
        figure(f"raw broker pipeline p99 at {rate:,}/s", q[98] * 1000, "ms")
        return lat
    moves, txn0, txn1 = end[0] - start[0], start[1], end[1]
    note = f"{len(lat):,}/{len(sent):,} results, {workers} worker(s), {moves:.0f} partition moves, {load()}"
    figure(f"command→result p50 at {rate:,}/s", q[49] * 1000, "ms", note)
    figure(f"command→result p99 at {rate:,}/s", q[98] * 1000, "ms")
    txns = txn1[1] - txn0[1]
    figure("  transaction, mean", (txn1[0] - txn0[0]) / max(txns, 1) * 1000, "ms", f"{txns:,.0f} transactions")
    slow = slow_transactions(handler_log(state, port))
    if slow:
        worst = max(slow, key=lambda e: float(e.get("seconds", 0)))
        parts = {k: worst.get(k) for k in ("commands", "processing", "offsets", "flush", "commit", "producer")}
        print(f"  {len(slow)} transaction(s) over {SLOW_TXN_S} s in the handler's log (warm-up included); the worst: "
              f"{worst.get('seconds')} s {parts}")  # fmt: skip
    return lat


def slow_transactions(log: Path) -> list[dict[str, Any]]:
    """The handler's "slow transaction" lines (JSON log), with their parts."""
    out = []
    for text in log.read_text(errors="replace").splitlines() if log.exists() else []:
        if '"slow transaction"' in text:
            try:
                out.append(json.loads(text))
            except ValueError:
                continue
    return out


def throughput(bootstrap: str, tmp: Path, count: int, workers: int, partitions: int) -> None:
    aggregate = new_aggregate(bootstrap, partitions, "tput")
    names = TopicNames(aggregate)
    aggregates = max(1, count // 5)
    p = producer(bootstrap)
    ids = []
    for n in range(count):
        aggregate_id = f"inv-{n % aggregates}"
        kind, payload = ("CreateInvoice", CREATE) if n < aggregates else ("AddLineItem", line(n))
        env = CommandEnvelope(uuid.uuid4().hex, aggregate_id, kind, payload)  # type: ignore[arg-type]
        ids.append(env.command_id)
        while True:
            try:
                p.produce(names.commands, env.to_bytes(), aggregate_id.encode())
                break
            except BufferError:
                p.poll(0.01)
    p.flush(120)
    results = Results(bootstrap, names.results, partitions)
    port = free_port()
    launched = time.perf_counter()
    cpu0 = os.times()
    proc = handler_process(bootstrap, aggregate, tmp / f"tput-{workers}", port, **handler_env(workers))
    try:
        done = wait_until(lambda: len(results.seen) >= count or proc.poll() is not None, 900, 0.02)
        last = max(results.seen.values(), default=launched)
        time.sleep(1.0)  # a duplicate written late would show now
        moves, (txn_s, txns) = counters(port)
    finally:
        results.stop()
        proc.terminate()
        proc.wait(60)
    cpu1 = os.times()
    cpu = (cpu1.children_user + cpu1.children_system) - (cpu0.children_user + cpu0.children_system)
    missing = sum(1 for c in ids if c not in results.seen)
    ok = done and missing == 0 and results.duplicates == 0
    note = f"{workers} worker(s), {partitions} partitions, {load()}"
    figure(f"{count:,} commands, launch → last result", count / (last - launched), "commands/s", note)
    figure("  first → last result", count / (last - results.first), "commands/s")
    figure("  handler CPU per command", cpu / count * 1e6, "µs")
    figure(
        "  transactions",
        txns,
        "",
        f"{count / max(txns, 1):,.0f} commands and {txn_s / max(txns, 1) * 1000:.0f} ms each",
    )
    figure("  partitions assigned, revoked or lost", moves, "")
    figure("  correctness: missing / duplicate results", missing, "missing", f"{results.duplicates} dup, ok={ok}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["latency", "throughput"])
    ap.add_argument("--rate", type=int, action="append")
    ap.add_argument("--workers", type=int, action="append")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--no-raw", action="store_true", help="latency: skip the raw broker pipeline's floor")
    args = ap.parse_args()
    bootstrap = broker()
    print(f"# handler {args.mode} — {load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="foldline-perf-") as tmp_dir:
        for workers in args.workers or [1]:
            if args.mode == "latency":
                for rate in args.rate or [500, 1000]:
                    if not args.no_raw:  # the floor first, the same rate and records, then the handler
                        latency(bootstrap, Path(tmp_dir), rate, args.seconds, workers, args.partitions, raw=True)
                    latency(bootstrap, Path(tmp_dir), rate, args.seconds, workers, args.partitions)
            else:
                throughput(bootstrap, Path(tmp_dir), args.count, workers, args.partitions)


if __name__ == "__main__":
    main()
