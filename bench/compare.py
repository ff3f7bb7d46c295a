"""The published comparison (``make bench-compare``): foldline against the same handler on Quix Streams.

Same broker, same partitions, the same command records (``bench.workload``, produced afresh to each
contender's commands topic), one contender at a time, each checked with ``bench.check`` before its figures
count. The raw transactional pipeline runs first as the ceiling. Quix runs from ``.cache/quix-venv``
(``make bench-compare`` creates it). Prints one figure per line and a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import orjson
from confluent_kafka.admin import AdminClient

from bench.check import Problems, Snapshot, check_history, read_events, read_results, read_topic
from bench.contest import Run, produce_commands, timed_run
from bench.support import REPO, broker, figure, load, new_aggregate, pace
from bench.throughput import LOGS, PARTITIONS, launch_logged, make_workload, run_foldline, run_raw
from bench.workload import Workload
from foldline.aggregate import AggregateSpec
from foldline.examples.invoices import Invoices
from foldline.topics import TopicNames

QUIX_PYTHON = REPO / ".cache" / "quix-venv" / "bin" / "python"


#: Quix's checkpoint (transaction) intervals to run: its default, and foldline's commit interval.
QUIX_INTERVALS = [float(v) for v in os.environ.get("FOLDLINE_BENCH_QUIX_COMMIT_INTERVALS", "5,0.1").split(",")]


def run_quix(bootstrap: str, workload: Workload, tmp: Path, interval: float, partitions: int = PARTITIONS) -> Run:
    aggregate = new_aggregate(bootstrap, partitions, "quix")
    names = TopicNames(aggregate)
    produce_commands(bootstrap, names.commands, workload.commands)
    group = f"bench-quix-{uuid.uuid4().hex[:8]}"
    argv = [
        str(QUIX_PYTHON),
        "-m",
        "bench.quix_invoices",
        bootstrap,
        names.commands,
        names.results,
        names.events,
        group,
        str(tmp / f"quix-state-{aggregate}"),
        str(interval),
    ]
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'services'}:{REPO}"}
    run = timed_run(
        f"quix streams, commit {interval:g} s",
        bootstrap,
        names.results,
        partitions,
        len(workload),
        lambda: launch_logged(argv, env, LOGS / f"{aggregate}.log"),
    )
    problems = check_quix(bootstrap, names, group, workload, partitions)
    run.problems, run.problem_count = problems.items, problems.count
    return run


def changelog_topic(bootstrap: str, group: str) -> str:
    """Quix names its state's changelog ``changelog__<group>--<topic>--<store>``."""
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=15).topics
    found = [name for name in topics if name.startswith(f"changelog__{group}--")]
    if len(found) != 1:
        raise RuntimeError(f"expected one changelog topic of {group}, found {found}")
    return found[0]


def quix_snapshots(bootstrap: str, topic: str, partitions: int) -> dict[str, Snapshot]:
    """The latest state per aggregate from Quix's changelog: key ``<message key>|<state key>``, value the
    JSON of ``bench.quix_invoices``' entry (``v`` version, ``s`` encoded state)."""
    latest: dict[str, Snapshot] = {}
    for msg in read_topic(bootstrap, topic, partitions):
        key, value = msg.key(), msg.value()
        if not key or value is None:
            continue
        aggregate_id = key.rsplit(b"|", 1)[0].decode()
        entry = orjson.loads(value)
        latest[aggregate_id] = Snapshot(aggregate_id, entry["v"], entry["s"])
    return latest


def check_quix(bootstrap: str, names: TopicNames, group: str, workload: Workload, partitions: int) -> Problems:
    return check_history(
        AggregateSpec(Invoices()),
        workload.commands,
        read_results(bootstrap, names.results, partitions),
        read_events(bootstrap, names.events, partitions),
        quix_snapshots(bootstrap, changelog_topic(bootstrap, group), partitions),
    )


def table(runs: list[Run], foldline: Run) -> str:
    rows = [
        "| contender | commands/s launch → last | first → last | CPU µs/command | peak RSS MB "
        "| foldline's ratio | check |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for run in runs:
        check = "passed" if not run.problem_count else f"{run.problem_count} problems"
        if run.name.startswith("raw"):
            check = "count only"
        rows.append(
            f"| {run.name} | {run.rate:,.0f} | {run.steady_rate:,.0f} | {run.cpu_us_per_command:,.0f} | "
            f"{run.peak_rss_mb:,.0f} | {foldline.rate / run.rate:.2f}x | {check} |"
        )
    return "\n".join(rows)


def main() -> None:
    if not QUIX_PYTHON.exists():
        raise SystemExit(f"{QUIX_PYTHON} is missing: run `make bench-compare` (it creates the Quix environment)")
    bootstrap = broker()
    print(f"# comparison — {load()}; {pace()}", flush=True)
    workload = make_workload()
    with tempfile.TemporaryDirectory(prefix="foldline-compare-") as tmp_dir:
        tmp = Path(tmp_dir)
        raw = run_raw(bootstrap, workload, tmp)
        raw.print()
        print(f"# {load()}", flush=True)
        foldline = run_foldline(bootstrap, workload, tmp)
        foldline.print(baseline=raw)
        print(f"# {load()}", flush=True)
        runs = [raw, foldline]
        for interval in QUIX_INTERVALS:
            quix = run_quix(bootstrap, workload, tmp, interval)
            quix.print(baseline=raw)
            figure(f"foldline ÷ {quix.name}, launch → last", foldline.rate / quix.rate, "x")
            figure(f"foldline ÷ {quix.name}, first → last", foldline.steady_rate / quix.steady_rate, "x")
            figure(f"{quix.name} ÷ foldline, CPU per command", quix.cpu_s / max(foldline.cpu_s, 1e-9), "x")
            print(f"# {load()}", flush=True)
            runs.append(quix)
    print(f"# done — {load()}; {pace()}", flush=True)
    print(table(runs, foldline), flush=True)


if __name__ == "__main__":
    main()
