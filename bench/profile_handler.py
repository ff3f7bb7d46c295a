"""Profile one command handler under a steady load of invoices commands (cProfile, the loop's thread).

    FOLDLINE_KAFKA_BOOTSTRAP=... python -m bench.profile_handler [--rate 1000] [--seconds 20] [--top 40] [--mix]

The handler runs in this process's main thread under cProfile while a producer thread offers ``--rate``
commands/s (an open loop; 0: a backlog of rate*seconds commands sent before the handler starts): creates
and line items on 2,000 invoices, or with ``--mix`` the benchmarks' realistic mix (bench.workload). Prints
the functions with the most own time, then the time per command of a few groups (codec, records,
metrics, Kafka calls). A figure to read, never asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer

from bench.support import broker, load, new_aggregate
from bench.workload import invoices_workload
from foldline.aggregate import load_aggregate
from foldline.handler.wiring import build_command_handler
from foldline.observability import metrics
from foldline.records import CommandEnvelope
from foldline.settings import HandlerSettings, KafkaSettings
from foldline.topics import TopicNames

CREATE = {"customer": "ACME Corporation", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}
AGGREGATES = 2000

#: (label, substrings of "file:function") for the per-command summary; a function counts in the first group.
GROUPS = [
    ("kafka: commit_transaction", ("commit_transaction",)),
    ("kafka: send_offsets_to_transaction", ("send_offsets_to_transaction",)),
    ("kafka: flush", ("method 'flush'",)),
    ("kafka: begin_transaction", ("begin_transaction",)),
    ("kafka: consume", ("method 'consume'",)),
    ("kafka: produce", ("method 'produce'",)),
    ("delivery callbacks", ("_on_snapshot",)),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("json (orjson)", ("orjson",)),
    ("records (encode/decode)", ("records.py",)),
    ("codec (state/event/command encoding, checks)", ("codec.py", "dataclasses.py")),
    ("intake (read_command)", ("intake.py",)),
    ("domain (invoices)", ("examples/invoices", "aggregate.py")),
    ("task", ("task.py",)),
    ("engine", ("engine.py",)),
]


def line(n: int) -> dict[str, object]:
    return {"line_id": f"l{n}", "description": "Consulting, senior engineer", "quantity": 3, "unit_price": "120.00"}


def envelope(n: int) -> tuple[bytes, bytes]:
    aggregate_id = f"inv-{n % AGGREGATES}"
    if n < AGGREGATES:
        env = CommandEnvelope(uuid.uuid4().hex, aggregate_id, "CreateInvoice", CREATE)  # type: ignore[arg-type]
    else:
        env = CommandEnvelope(uuid.uuid4().hex, aggregate_id, "AddLineItem", line(n))  # type: ignore[arg-type]
    return aggregate_id.encode(), env.to_bytes()


def offer(
    bootstrap: str, topic: str, total: int, rate: float, stop: threading.Event, mixed: list[tuple[bytes, bytes]]
) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "enable.idempotence": True,
                  "partitioner": "murmur2_random", "queue.buffering.max.messages": 1_000_000})  # fmt: skip
    started = time.perf_counter()
    for n in range(total):
        if stop.is_set():
            break
        if rate:
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        key, value = mixed[n] if mixed else envelope(n)
        while True:
            try:
                p.produce(topic, value, key)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush(60)


def handled(aggregate: str) -> float:
    total = 0.0
    for family in metrics.COMMANDS.collect():
        total += sum(
            s.value for s in family.samples if s.name.endswith("_total") and s.labels["aggregate"] == aggregate
        )
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--top", type=int, default=35)
    ap.add_argument("--out", default="")
    ap.add_argument("--mix", action="store_true", help="the benchmarks' realistic invoices mix")
    args = ap.parse_args()
    bootstrap = broker()
    aggregate = new_aggregate(bootstrap, args.partitions, "prof")
    total = int(max(args.rate, 1) * args.seconds) if args.rate else int(args.seconds * 10_000)
    spec = load_aggregate(f"tests.named_invoices:{aggregate.replace('-', '_')}")
    stop = threading.Event()
    topic = TopicNames(aggregate).commands
    mixed: list[tuple[bytes, bytes]] = []
    if args.mix:
        workload = invoices_workload(total // 5 + 1, args.partitions)
        mixed = [(c.key, c.value) for c in workload.commands][:total]
        total = len(mixed)
    if not args.rate:
        offer(bootstrap, topic, total, 0, stop, mixed)
    with tempfile.TemporaryDirectory(prefix="foldline-prof-") as tmp:
        settings = HandlerSettings(kafka=KafkaSettings(bootstrap_servers=bootstrap), state_dir=Path(tmp), http_port=0)
        handler = build_command_handler(spec, settings)
        producer = threading.Thread(target=offer, args=(bootstrap, topic, total, args.rate, stop, mixed), daemon=True)
        marks: dict[str, float] = {}

        def watch() -> None:
            while handled(aggregate) < 1 and not stop.is_set():
                time.sleep(0.01)
            marks["first"], marks["first_n"] = time.perf_counter(), handled(aggregate)
            while handled(aggregate) < total and not stop.is_set():
                time.sleep(0.05)
            marks["last"], marks["last_n"] = time.perf_counter(), handled(aggregate)
            handler.stop()

        if args.rate:
            producer.start()
        threading.Thread(target=watch, daemon=True).start()
        prof = cProfile.Profile()
        cpu0 = time.process_time()
        prof.enable()
        try:
            handler.run()
        finally:
            prof.disable()
            stop.set()
        cpu = time.process_time() - cpu0
    n = marks["last_n"] - marks["first_n"]
    print(f"# profile: {total:,} commands at {args.rate or 'backlog'}/s, {args.partitions} partitions — {load()}")
    print(f"handled {n:,.0f} in {marks['last'] - marks['first']:.2f}s; process CPU {cpu:.2f}s "
          f"({cpu / total * 1e6:.0f} µs/command, all threads)")  # fmt: skip
    stats = pstats.Stats(prof)
    if args.out:
        stats.dump_stats(args.out)
    rows = []
    for (file, lineno, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((tt, ct, nc, f"{file}:{lineno}:{func}"))
    rows.sort(reverse=True)
    total_tt = sum(r[0] for r in rows)
    print(f"\nown time in the loop's thread: {total_tt:.2f}s = {total_tt / total * 1e6:.0f} µs/command")
    print(f"{'own µs/cmd':>10} {'cum µs/cmd':>10} {'calls':>9}  function")
    for tt, ct, nc, name in rows[: args.top]:
        short = name.split("site-packages/")[-1].split("services/")[-1]
        print(f"{tt / total * 1e6:>10.1f} {ct / total * 1e6:>10.1f} {nc:>9}  {short}")
    print("\nown time by group (µs/command):")
    groups: dict[str, float] = {}
    for tt, _, _, name in rows:
        label = next((g for g, keys in GROUPS if any(k in name for k in keys)), "other")
        groups[label] = groups.get(label, 0.0) + tt
    for label, tt in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {label:<38} {tt / total * 1e6:>8.1f}")


if __name__ == "__main__":
    random.seed(1)
    main()
