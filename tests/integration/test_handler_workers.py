"""A handler pod with several worker processes (FOLDLINE_WORKERS): the group spreads the partitions over
the workers, every command gets exactly one result, the pod has one /metrics (summed over the workers,
never going backwards when a worker is restarted), a killed worker comes back, SIGTERM drains them all, and
a worker that keeps failing makes the pod not ready."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from foldline.topics import TopicNames
from tests.conftest import aggregate_path
from tests.kafka_support import REPO, command, results, send, start_handler, wait_for_results

CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def metric(port: int, series: str) -> float:
    """The value of one series (``name{labels}``) on the pod's /metrics; -1 when it is not there."""
    _, text = get(port, "/metrics")
    found = re.findall(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(found[0]) if found else -1.0


def counted(port: int, aggregate: str) -> float:
    return metric(port, f'foldline_commands_total{{aggregate="{aggregate}",status="accepted"}}')


def log_lines(path: Path) -> list[dict[str, object]]:
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


@pytest.mark.kafka
def test_two_workers_share_the_partitions_exactly_once(kafka_bootstrap, invoices_aggregate, tmp_path):
    cls = invoices_aggregate(partitions=4)
    port = free_port()
    proc = start_handler(
        kafka_bootstrap,
        aggregate_path(cls),
        tmp_path / "state",
        "pod-0",
        tmp_path,
        extra_env={"FOLDLINE_WORKERS": "2", "FOLDLINE_COMMIT_INTERVAL_MS": "20"},
        http_port=port,
    )
    try:
        wait(lambda: get(port, "/readyz")[0] == 200, 120, "the pod to be ready")
        assert len(children(proc.proc.pid)) == 2
        first = [command(f"a{i}", "CreateInvoice", CREATE) for i in range(200)]
        send(kafka_bootstrap, TopicNames(cls.name).commands, first)
        wait_for_results(kafka_bootstrap, cls.name, len(first))
        wait(lambda: counted(port, cls.name) == 200, 30, "the merged counter")
        owned = f'foldline_assigned_partitions{{aggregate="{cls.name}"}} 4.0'
        wait(lambda: owned in get(port, "/metrics")[1], 60, "the four partitions spread over the workers")

        # Each worker is its own group member with its own partitions, identity and state directory.
        def owners() -> set[object]:
            lines = log_lines(proc.log)
            return {e["worker"] for e in lines if e.get("event") == "partitions assigned" and e["partitions"]}

        wait(lambda: owners() == {0, 1}, 60, "both workers to own partitions")
        # ... but the stores are the pod's: one directory per partition, whichever worker owns it.
        assert not (tmp_path / "state" / "worker-1").exists()
        assert sorted(p.name for p in (tmp_path / "state" / cls.name).glob("partition-?")) == [
            f"partition-{n}" for n in range(4)
        ]

        # A worker killed outright is started again; the pod's counter never goes backwards.
        before = counted(port, cls.name)
        os.kill(children(proc.proc.pid)[0], signal.SIGKILL)
        for _ in range(10):  # while the worker is dead and after its restart
            assert counted(port, cls.name) >= before
            time.sleep(0.2)
        wait(lambda: len(children(proc.proc.pid)) == 2, 60, "the worker to be restarted")
        wait(lambda: get(port, "/readyz")[0] == 200, 120, "the pod to be ready again")
        second = [command(f"b{i}", "CreateInvoice", CREATE) for i in range(200)]
        send(kafka_bootstrap, TopicNames(cls.name).commands, second)
        wait_for_results(kafka_bootstrap, cls.name, len(first) + len(second))
        wait(lambda: counted(port, cls.name) >= 400, 30, "the merged counter after the restart")
    finally:
        workers = children(proc.proc.pid) if proc.alive() else []
        assert proc.terminate() == 0  # SIGTERM: every worker drains
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    # Exactly once: one result per command id, although a worker died mid-stream.
    got = results(kafka_bootstrap, cls.name)
    per_id = Counter(r.command_id for r in got)
    assert set(per_id) == {c.command_id for c in first + second}
    assert set(per_id.values()) == {1}
    stopped = [e for e in log_lines(proc.log) if e.get("event") == "command handler stopped"]
    assert {e["worker"] for e in stopped} == {0, 1}
    assert any(e.get("event") == "workers stopped" for e in log_lines(proc.log))


def restored(port: int, aggregate: str) -> float:
    return metric(port, f'foldline_store_restored_records_total{{aggregate="{aggregate}"}}')


def assignments(log: Path) -> list[tuple[int, int]]:
    """(worker, partition) for every assignment, in order."""
    events = [e for e in log_lines(log) if e.get("event") == "partitions assigned"]
    return [(int(str(e["worker"])), int(p)) for e in events for p in list(e["partitions"])]  # type: ignore[call-overload]


@pytest.mark.kafka
def test_a_partition_moving_to_another_worker_keeps_its_store(kafka_bootstrap, invoices_aggregate, tmp_path):
    """The workers share the pod's state directories: a partition that a restarted worker gave up and
    another took (and back) restores only the tail, not the snapshots its store already holds."""
    cls = invoices_aggregate(partitions=4)
    port = free_port()
    old = tmp_path / "state" / "worker-1" / cls.name / "partition-0"
    old.mkdir(parents=True)  # left by an earlier version: removed when the pod starts
    proc = start_handler(
        kafka_bootstrap,
        aggregate_path(cls),
        tmp_path / "state",
        "pod-0",
        tmp_path,
        extra_env={"FOLDLINE_WORKERS": "2", "FOLDLINE_COMMIT_INTERVAL_MS": "20"},
        http_port=port,
    )
    sent = []
    try:
        wait(lambda: get(port, "/readyz")[0] == 200, 120, "the pod to be ready")
        wait(lambda: {w for w, _ in assignments(proc.log)} == {0, 1}, 60, "both workers to own partitions")
        assert not (tmp_path / "state" / "worker-1").exists()
        first = [command(f"a{i}", "CreateInvoice", CREATE) for i in range(400)]
        send(kafka_bootstrap, TopicNames(cls.name).commands, first)
        sent += first
        wait_for_results(kafka_bootstrap, cls.name, len(sent))
        assert restored(port, cls.name) == 0  # fresh stores, an empty changelog
        before = assignments(proc.log)
        owner = dict(before)
        # Worker 1 stops cleanly (its partitions go to worker 0) and is started again (it takes some back).
        started = [e for e in log_lines(proc.log) if e.get("event") == "worker started" and e["worker"] == 1]
        os.kill(int(started[-1]["pid"]), signal.SIGTERM)  # type: ignore[call-overload]

        def moved() -> list[tuple[int, int]]:
            return [(w, p) for w, p in assignments(proc.log)[len(before) :] if owner.get(p) != w]

        wait(lambda: {w for w, _ in moved()} == {0, 1}, 120, "partitions to move to worker 0 and back")
        wait(lambda: get(port, "/readyz")[0] == 200, 120, "the pod to be ready again")
        second = [command(f"b{i}", "CreateInvoice", CREATE) for i in range(200)]
        send(kafka_bootstrap, TopicNames(cls.name).commands, second)
        sent += second
        wait_for_results(kafka_bootstrap, cls.name, len(sent))
        # From scratch, every moved partition would restore its ~100 snapshots of the first 400 commands.
        # The store kept them: at most a tail, never a whole partition, although partitions moved twice.
        print("moved (worker, partition):", moved(), "snapshots restored:", restored(port, cls.name))
        assert 0 <= restored(port, cls.name) < 50, proc.log.read_text()[-4000:]
        assert not [e for e in log_lines(proc.log) if "private directory" in str(e.get("event"))]
    finally:
        assert proc.terminate() == 0
    got = results(kafka_bootstrap, cls.name)
    per_id = Counter(r.command_id for r in got)
    assert set(per_id) == {c.command_id for c in sent}
    assert set(per_id.values()) == {1}


def test_a_crash_looping_worker_makes_the_pod_not_ready(tmp_path):
    """Workers that fail at once (here: an aggregate only the supervisor can import) are restarted with a
    backoff, and the pod reports not ready while they crash-loop; it stays up and stops cleanly."""
    port = free_port()
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "only_parent.py").write_text(
        "import os\nfrom foldline.examples.invoices import Invoices\n"
        "if os.environ.get('FOLDLINE_WORKER_INDEX'):\n    raise SystemExit('no domain in the workers')\n"
    )
    env = {
        **os.environ,
        "FOLDLINE_WORKERS": "2",
        "FOLDLINE_HTTP_PORT": str(port),
        "FOLDLINE_HTTP_HOST": "127.0.0.1",
        "FOLDLINE_STATE_DIR": str(tmp_path / "state"),
        "FOLDLINE_LOG_FORMAT": "json",
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "pkg"), str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    log = tmp_path / "pod.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "foldline.cli", "command-handler", "--aggregate", "only_parent:Invoices"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait(lambda: log.read_text().count('"worker exited; restarting it"') >= 6, 60, "three exits per worker")
        crash = [e for e in log_lines(log) if e.get("event") == "worker exited; restarting it"]
        assert any(e["crash_loop"] for e in crash)
        for _ in range(5):
            assert proc.poll() is None
            assert get(port, "/healthz")[0] == 200
            assert get(port, "/readyz")[0] == 503
            time.sleep(0.3)
    finally:
        proc.terminate()
        assert proc.wait(60) == 0, log.read_text()
