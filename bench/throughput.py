"""Exactly-once throughput on the invoices workload, beside the broker's raw limit measured the same way.

Every figure: wall time from the process's launch (and, separately, first → last result) until every
command record's result is readable ``read_committed``, and only once the run's records pass the
correctness check (``bench.check``). The raw pipeline (``bench.raw_pipeline``) does one consume and three
produces per command in transactions and no domain work: the ceiling a handler on this broker, client and
machine can approach.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from bench import raw_pipeline
from bench.check import Problems, check_history, read_events, read_results, read_snapshots
from bench.contest import Run, produce_commands, timed_run
from bench.support import REPO, baseline_code, broker, figure, free_port, load, new_aggregate, pace
from bench.workload import Workload, invoices_workload
from foldline.aggregate import AggregateSpec
from foldline.examples.invoices import Invoices
from foldline.topics import TopicNames

PARTITIONS = int(os.environ.get("FOLDLINE_BENCH_PARTITIONS", "3"))
#: About 5.7 commands per invoice: 17,500 invoices make about 100,000 commands.
INVOICES = int(os.environ.get("FOLDLINE_BENCH_INVOICES", "17500"))


def workers() -> int:
    """The processes the raw pipeline splits the partitions between: the handler's own default."""
    return int(os.environ.get("FOLDLINE_WORKERS", "0")) or os.cpu_count() or 1


def make_workload(partitions: int = PARTITIONS, invoices: int = INVOICES) -> Workload:
    workload = invoices_workload(invoices, partitions)
    print(f"# workload: {workload.describe()}; {partitions} partitions", flush=True)
    return workload


def handler_env(bootstrap: str, state: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FOLDLINE_KAFKA_BOOTSTRAP": bootstrap,
        "FOLDLINE_STATE_DIR": str(state),
        "FOLDLINE_HTTP_PORT": str(free_port()),
        "FOLDLINE_INSTANCE_ID": uuid.uuid4().hex[:8],
        "FOLDLINE_LOG_FORMAT": "json",
        # FOLDLINE_BENCH_CODE=<checkout>: the handler runs from that checkout's services/ (a baseline).
        "PYTHONPATH": os.pathsep.join([*baseline_code(), str(REPO)]),
    }


#: Each contender's output, kept after the run (the state directories are temporary).
LOGS = REPO / ".cache" / "bench-logs"


def launch_logged(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)


def run_foldline(bootstrap: str, workload: Workload, tmp: Path, partitions: int = PARTITIONS) -> Run:
    """The command handler as deployed (``foldline.cli command-handler``, default settings)."""
    aggregate = new_aggregate(bootstrap, partitions, "tput")
    names = TopicNames(aggregate)
    produce_commands(bootstrap, names.commands, workload.commands)
    argv = [
        sys.executable,
        "-m",
        "foldline.cli",
        "command-handler",
        "--aggregate",
        f"tests.named_invoices:{aggregate.replace('-', '_')}",
    ]
    env = handler_env(bootstrap, tmp / f"state-{aggregate}")
    run = timed_run(
        "foldline",
        bootstrap,
        names.results,
        partitions,
        len(workload),
        lambda: launch_logged(argv, env, LOGS / f"{aggregate}.log"),
    )
    problems = check_foldline(bootstrap, names, workload, partitions)
    run.problems, run.problem_count = problems.items, problems.count
    return run


def check_foldline(bootstrap: str, names: TopicNames, workload: Workload, partitions: int) -> Problems:
    return check_history(
        AggregateSpec(Invoices()),
        workload.commands,
        read_results(bootstrap, names.results, partitions),
        read_events(bootstrap, names.events, partitions),
        read_snapshots(bootstrap, names.snapshots, partitions),
    )


def run_raw(bootstrap: str, workload: Workload, tmp: Path, partitions: int = PARTITIONS) -> Run:
    """The same records through ``bench.raw_pipeline``: counted the same way; nothing to check but the count."""
    aggregate = new_aggregate(bootstrap, partitions, "raw")
    names = TopicNames(aggregate)
    produce_commands(bootstrap, names.commands, workload.commands)
    argv = raw_pipeline.command_line(bootstrap, names, partitions, workers())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return timed_run(
        f"raw broker ({workers()} proc)",
        bootstrap,
        names.results,
        partitions,
        len(workload),
        lambda: launch_logged(argv, env, LOGS / f"{aggregate}.log"),
    )


def bench_throughput(bootstrap: str, tmp: Path) -> Run:
    workload = make_workload()
    raw = run_raw(bootstrap, workload, tmp)
    raw.print()
    run = run_foldline(bootstrap, workload, tmp)
    run.print(baseline=raw)
    figure("  foldline first→last ratio to raw", run.steady_rate / raw.steady_rate * 100, "%")
    return run


def main() -> None:
    bootstrap = broker()
    print(f"# handler throughput — {load()}; handler code: {baseline_code() or ['this checkout']}", flush=True)
    print(f"# {pace()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="foldline-bench-") as tmp_dir:
        bench_throughput(bootstrap, Path(tmp_dir))
    print(f"# done — {load()}; {pace()}", flush=True)
