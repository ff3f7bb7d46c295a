"""Failover time of a command-handler partition holding 1,000,000 aggregates, against the real broker.

Two handler processes (static members, classic protocol: as the operator's StatefulSet pods run) share a
2-partition aggregate whose partition 0 holds every aggregate; the snapshots are written straight to
``<agg>.snapshots`` in the handler's own format (no million commands). The owner of partition 0 is
SIGKILLed and, at that moment, a command for one of its aggregates is sent; the figure is the time until
its result is readable ``read_committed``. Four ways to come back:

(a) the other process takes the partition, no standby: a full restore;
(b) the other process takes it from its warm standby store (FOLDLINE_STANDBY_REPLICAS=1): only the tail;
(c) the same instance restarted at once with its state directory kept (a PVC): static membership gives it
    its partition back without a rebalance, and its store needs only the tail;
(d) the same instance restarted with its state directory wiped (an emptyDir): a full restore.

(a) and (b) include the session timeout (10 s) the group coordinator waits before it gives a SIGKILLed
static member's partitions away. Every figure is printed beside the machine's load average; none is
asserted. ``python -m bench.failover`` (FOLDLINE_BENCH_AGGREGATES to change the million).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.support import REPO, broker, figure, free_port, load, new_aggregate, produce_all, wait_until
from foldline.consumer import take
from foldline.ids import AggregateId, CommandId
from foldline.partitioner import partition_for
from foldline.records import CommandEnvelope, CommandResult, SnapshotRecord
from foldline.topics import TopicNames, handler_group

PARTITIONS = 2
LINE = {"line_id": "l0", "description": "Consulting, senior engineer", "quantity": 3, "unit_price": "120.00"}


def keys_of_partition_zero(count: int) -> list[str]:
    out: list[str] = []
    i = 0
    while len(out) < count:
        key = f"inv-{i}"
        if partition_for(key, PARTITIONS) == 0:
            out.append(key)
        i += 1
    return out


def snapshot(aggregate_id: str) -> bytes:
    """A draft invoice at version 3 with two lines, as the handler itself would have written it (~500 B)."""
    state = {
        "status": "draft",
        "customer": "ACME Corporation",
        "currency": "EUR",
        "issue_date": "2026-11-01",
        "due_date": "2026-12-01",
        "lines": [{**LINE, "line_id": f"l{n}"} for n in range(2)],
        "paid": "0",
        "payments": [],
    }
    recent = ({"command_id": uuid.uuid4().hex, "status": "accepted", "version": 3},)
    return SnapshotRecord(AggregateId(aggregate_id), 3, state, 1, recent).to_bytes()


@dataclass
class Handler:
    instance: str
    state: Path
    port: int
    log: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    lines: int = 0

    def start(self, bootstrap: str, aggregate: str) -> None:
        self.lines = len(self.log.read_text().splitlines()) if self.log.exists() else 0
        environ = {
            **os.environ,
            "FOLDLINE_KAFKA_BOOTSTRAP": bootstrap,
            "FOLDLINE_STATE_DIR": str(self.state),
            "FOLDLINE_HTTP_PORT": str(self.port),
            "FOLDLINE_INSTANCE_ID": self.instance,
            "FOLDLINE_STATIC_MEMBERSHIP": "true",
            "FOLDLINE_KAFKA_GROUP_PROTOCOL": "classic",
            "FOLDLINE_LOG_FORMAT": "json",
            "PYTHONPATH": str(REPO),
            **self.env,
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "foldline.cli", "command-handler", "--aggregate",
                 f"tests.named_invoices:{aggregate.replace('-', '_')}"],
                env=environ, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def metric(self, name: str, partition: str = "") -> float | None:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2).read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(name + "{") and (not partition or f'partition="{partition}"' in line):
                return float(line.rsplit(" ", 1)[1])
        return None

    def restores(self) -> list[dict[str, object]]:
        """The "store restored" events it logged since it was started."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines()[self.lines :]:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "store restored":
                out.append(event)
        return out

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


@dataclass
class Scenario:
    label: str
    standby: int = 0
    restart: bool = False
    wipe: bool = False
    handlers: list[Handler] = field(default_factory=list)


def owners(admin: AdminClient, group: str) -> dict[str, list[int]]:
    try:
        description = admin.describe_consumer_groups([group], request_timeout=5)[group].result(timeout=30)
    except (KafkaException, TimeoutError):
        return {}
    return {
        str(m.group_instance_id): sorted(tp.partition for tp in m.assignment.topic_partitions)
        for m in description.members
    }


def result_reader(bootstrap: str, topic: str) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-failover-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 20,
        }
    )
    _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    consumer.assign([TopicPartition(topic, 0, high)])
    return consumer


def wait_for_result(consumer: Consumer, command_id: str, timeout: float = 900.0) -> CommandResult:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for msg in take(consumer, 100, 0.02):
            if msg.error() is None and msg.value() is not None:
                result = CommandResult.from_bytes(msg.value())
                if result.command_id == command_id:
                    return result
    raise TimeoutError(f"no result for {command_id} within {timeout:.0f}s")


def run(scenario: Scenario, bootstrap: str, aggregate: str, target: str, tmp: Path) -> None:
    names, group = TopicNames(aggregate), handler_group(aggregate)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    tag = scenario.label.split()[0].strip("()")
    env = {"FOLDLINE_STANDBY_REPLICAS": str(scenario.standby)}
    handlers = [Handler(f"{tag}-{n}", tmp / tag / f"h{n}", free_port(), tmp / f"{tag}-h{n}.log", env) for n in range(2)]
    scenario.handlers = handlers
    for h in handlers:
        h.start(bootstrap, aggregate)
    try:
        ids = {h.instance for h in handlers}
        # Members of an earlier scenario leave the group only when their session times out.
        wait_until(lambda: set(owners(admin, group)) == ids and all(owners(admin, group).values()), 300, 0.5)
        assignment = owners(admin, group)
        active = next(h for h in handlers if 0 in assignment[h.instance])
        other = next(h for h in handlers if h is not active)
        wait_until(lambda: active.ready() and other.ready(), 900, 0.5)
        if scenario.standby:
            # The first member to join may have owned partition 0 for a moment (and restored it): restart the
            # other one with its state wiped, so that its standby builds its copy from nothing (a static member
            # back within the session timeout keeps its own partition).
            other.stop()
            shutil.rmtree(other.state, ignore_errors=True)
            started = time.monotonic()
            other.start(bootstrap, aggregate)
            wait_until(lambda: other.metric("foldline_standby_lag", "0") == 0, 1800, 0.5)
            copied = other.metric("foldline_standby_records_total", "0") or 0
            took = time.monotonic() - started
            figure("    standby copy of partition 0 built", took, "s", f"{copied:,.0f} snapshots; {load()}")
            wait_until(lambda: other.ready(), 900, 0.5)
            if owners(admin, group).get(active.instance) != [0]:
                print(f"#   note: the restart moved partitions: {owners(admin, group)}", flush=True)
        if not scenario.standby and not scenario.restart:
            # The first member to join owned both partitions for a moment and may have restored partition 0
            # before the second took it: a survivor without a standby has no copy (its store is closed now).
            shutil.rmtree(other.state / aggregate / "partition-0", ignore_errors=True)
        time.sleep(2.0)
        reader = result_reader(bootstrap, names.results)
        producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 0})
        envelope = CommandEnvelope(
            CommandId(uuid.uuid4().hex), AggregateId(target), "AddLineItem", {**LINE, "line_id": "x"}
        )
        load_then = load()
        killed = time.monotonic()
        active.kill()
        producer.produce(names.commands, envelope.to_bytes(), target.encode())
        producer.flush(10)
        taker = other
        if scenario.restart:
            if scenario.wipe:
                shutil.rmtree(active.state, ignore_errors=True)
            active.start(bootstrap, aggregate)
            taker = active
        else:
            other.lines = len(other.log.read_text().splitlines())
        result = wait_for_result(reader, envelope.command_id)
        elapsed = time.monotonic() - killed
        reader.close()
        restored = sum(int(str(e.get("snapshots", 0))) for e in taker.restores() if e.get("partition") == 0)
        restore_s = sum(float(str(e.get("seconds", 0))) for e in taker.restores() if e.get("partition") == 0)
        figure(
            scenario.label,
            elapsed,
            "s",
            f"restored {restored:,} snapshots in {restore_s:.1f}s; result {result.status} v{result.version}; "
            f"{load_then}",
        )
    finally:
        for h in handlers:
            h.stop()


def main() -> None:
    bootstrap = broker()
    aggregates = int(os.environ.get("FOLDLINE_BENCH_AGGREGATES", "1000000"))
    print(f"# command-handler failover — {load()}", flush=True)
    aggregate = new_aggregate(bootstrap, PARTITIONS, "failover")
    keys = keys_of_partition_zero(aggregates)
    seconds = produce_all(bootstrap, TopicNames(aggregate).snapshots, ((k.encode(), snapshot(k)) for k in keys))
    figure("snapshots written to partition 0", aggregates, "records", f"in {seconds:.1f}s; {load()}")
    target = keys[len(keys) // 2]
    scenarios = [
        Scenario("(a) survivor, no standby (full restore)"),
        Scenario("(b) survivor with a standby", standby=1),
        Scenario("(c) same instance restarted, state kept (PVC)", restart=True),
        Scenario("(d) same instance restarted, state wiped", restart=True, wipe=True),
    ]
    with tempfile.TemporaryDirectory(prefix="foldline-failover-") as tmp_dir:
        tmp = Path(tmp_dir)
        for scenario in scenarios:
            run(scenario, bootstrap, aggregate, target, tmp)
            target = keys[(keys.index(target) + 1) % len(keys)]  # a fresh aggregate: every result accepted
    print(f"# done — {load()}", flush=True)


if __name__ == "__main__":
    main()
