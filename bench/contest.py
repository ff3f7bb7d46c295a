"""One timed run of one contender: the same command records in, results counted as they become readable.

The records are on the commands topic before the contender starts. The clock starts when its process is
launched; a reader in this process counts results ``read_committed`` (what a client can see) and notes
the first and the last; the run ends when every command record has its result. Then the process is
stopped, and its records are read back and checked (``bench.check``) before the figure counts.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Producer, TopicPartition

from bench.procs import TreeSampler, cpu_seconds, listening_pid
from bench.support import figure
from bench.workload import Planned
from foldline.consumer import take


@dataclass
class Run:
    name: str
    commands: int
    launch_to_last_s: float
    first_to_last_s: float
    cpu_s: float
    peak_rss_mb: float
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    #: The local broker's own CPU seconds over the same span (None: the broker is not on this machine).
    broker_cpu_s: float | None = None

    @property
    def rate(self) -> float:
        """Commands per second from launch to the last result: start-up, restore and catch-up included."""
        return self.commands / self.launch_to_last_s

    @property
    def steady_rate(self) -> float:
        return self.commands / max(self.first_to_last_s, 1e-9)

    @property
    def cpu_us_per_command(self) -> float:
        return self.cpu_s / self.commands * 1e6

    def print(self, baseline: Run | None = None) -> None:
        note = "" if not self.problem_count else f"INCORRECT: {self.problem_count} problems"
        figure(f"{self.name}: launch → last result", self.rate, "commands/s", note)
        figure(f"{self.name}: first → last result", self.steady_rate, "commands/s")
        figure(f"{self.name}: CPU per command", self.cpu_us_per_command, "µs", f"{self.cpu_s:.1f} CPU s in all")
        figure(f"{self.name}: peak RSS", self.peak_rss_mb, "MB", "summed over its processes")
        if self.broker_cpu_s is not None:
            share = self.broker_cpu_s / max(self.launch_to_last_s, 1e-9)
            figure(
                f"{self.name}: the broker's CPU per command",
                self.broker_cpu_s / self.commands * 1e6,
                "µs",
                f"{self.broker_cpu_s:.1f} CPU s in all, {share:.2f} cores on average",
            )
        if baseline is not None:
            figure(f"{self.name}: ratio to {baseline.name}", self.rate / baseline.rate * 100, "%", "launch → last")
        for problem in self.problems:
            print(f"    problem: {problem}", flush=True)


def produce_commands(bootstrap: str, topic: str, planned: Iterable[Planned]) -> None:
    """The benchmark's producer keeps each partition's order (idempotent) and places records itself,
    by the same murmur2 the gateway's producer uses (``Planned.partition``)."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            "queue.buffering.max.messages": 1_000_000,
            "batch.num.messages": 10_000,
        }
    )
    for p in planned:
        while True:
            try:
                producer.produce(topic, p.value, p.key, partition=p.partition)
                break
            except BufferError:
                producer.poll(0.01)
    left = producer.flush(300)
    if left:
        raise RuntimeError(f"{left} command records were not delivered")


class ResultCounter:
    """Counts records on a results topic as they become readable ``read_committed``."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._config = {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-count-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
        self._partitions = [TopicPartition(topic, p, 0) for p in range(partitions)]
        self._thread = threading.Thread(target=self._run, name="result-counter", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        consumer = Consumer(self._config)  # created, used and closed by this thread only
        consumer.assign(self._partitions)
        while not self._stop.is_set():
            msgs = take(consumer, 10_000, 0.05)
            self.ready.set()
            n = sum(1 for m in msgs if m.error() is None)
            if n:
                now = time.perf_counter()
                if self.first is None:
                    self.first = now
                self.last = now
                self.count += n
        consumer.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def timed_run(
    name: str,
    bootstrap: str,
    results_topic: str,
    partitions: int,
    expected: int,
    launch: Callable[[], subprocess.Popen[bytes]],
    timeout: float = 1800.0,
) -> Run:
    """Launch, wait for ``expected`` readable results, stop. The check is the caller's (it knows the topics)."""
    counter = ResultCounter(bootstrap, results_topic, partitions)
    counter.ready.wait(30)
    broker_pid = local_broker(bootstrap)
    broker_before = None if broker_pid is None else cpu_seconds(broker_pid)
    started = time.perf_counter()
    proc = launch()
    sampler = TreeSampler(proc.pid).start()
    try:
        deadline = started + timeout
        while counter.count < expected:
            if proc.poll() is not None:
                raise RuntimeError(f"{name}: the process exited with {proc.returncode} after {counter.count} results")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{name}: only {counter.count} of {expected} results after {timeout:.0f}s")
            time.sleep(0.02)
        ended = counter.last or time.perf_counter()
        sampler.stop()
        broker_after = None if broker_pid is None else cpu_seconds(broker_pid)
    finally:
        counter.stop()
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    first = counter.first or ended
    run = Run(name, expected, ended - started, ended - first, sampler.cpu_s, sampler.peak_rss_mb)
    if broker_before is not None and broker_after is not None:
        run.broker_cpu_s = broker_after - broker_before
    return run


def local_broker(bootstrap: str) -> int | None:
    """The pid of the broker behind a loopback bootstrap address, when it runs on this machine."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]") or not port.isdigit():
        return None
    return listening_pid(int(port))
