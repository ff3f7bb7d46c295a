"""Helpers the integration tests share: send commands, read whole topics, run handler processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from foldline.ids import AggregateId, CommandId
from foldline.records import CommandEnvelope, CommandResult
from foldline.topics import TopicNames

REPO = Path(__file__).resolve().parent.parent


def producer(bootstrap: str) -> Producer:
    return Producer(
        {"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 5, "enable.idempotence": True}
    )


def command(
    aggregate_id: str,
    type_: str,
    payload: dict[str, Any] | None = None,
    *,
    expected_version: int | None = None,
    command_id: str | None = None,
) -> CommandEnvelope:
    return CommandEnvelope(
        CommandId(command_id or uuid.uuid4().hex), AggregateId(aggregate_id), type_, payload or {}, expected_version
    )


def send(bootstrap: str, topic: str, envelopes: Iterable[CommandEnvelope | tuple[bytes | None, bytes | None]]) -> int:
    p = producer(bootstrap)
    n = 0
    for item in envelopes:
        if isinstance(item, CommandEnvelope):
            p.produce(topic, item.to_bytes(), item.aggregate_id.encode())
        else:
            p.produce(topic, item[1], item[0])
        n += 1
        if n % 10_000 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    return n


def read_topic(bootstrap: str, topic: str, *, timeout: float = 60.0) -> list[Any]:
    """Every committed record of a topic, read_committed, up to its end now."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    tps = [TopicPartition(topic, p, 0) for p in partitions]
    consumer.assign(tps)
    remaining = set(partitions)
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while remaining and time.monotonic() < deadline:
        for msg in consumer.consume(5000, 0.5):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    remaining.discard(msg.partition())
                continue
            out.append(msg)
    consumer.close()
    assert not remaining, f"could not read {topic} to its end within {timeout}s"
    return out


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """``group``'s committed offset of each partition of ``topic`` (negative: none committed)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        got = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in got}
    finally:
        consumer.close()


def results(bootstrap: str, aggregate: str) -> list[CommandResult]:
    return [CommandResult.from_bytes(m.value()) for m in read_topic(bootstrap, TopicNames(aggregate).results)]


def wait_for_results(bootstrap: str, aggregate: str, count: int, timeout: float = 120.0) -> list[CommandResult]:
    deadline = time.monotonic() + timeout
    got: list[CommandResult] = []
    while time.monotonic() < deadline:
        got = results(bootstrap, aggregate)
        if len({r.command_id for r in got}) >= count:
            return got
        time.sleep(0.5)
    raise AssertionError(f"only {len({r.command_id for r in got})} of {count} results within {timeout}s")


@dataclass
class HandlerProcess:
    """``foldline command-handler`` as a real child process."""

    proc: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)

    def terminate(self) -> int:
        self.proc.terminate()
        return self.proc.wait(60)

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_handler(
    bootstrap: str,
    aggregate_path: str,
    state_dir: Path,
    instance: str,
    log_dir: Path,
    extra_env: dict[str, str] | None = None,
    http_port: int = 0,
) -> HandlerProcess:
    env = {
        **os.environ,
        "FOLDLINE_KAFKA_BOOTSTRAP": bootstrap,
        "FOLDLINE_STATE_DIR": str(state_dir),
        "FOLDLINE_INSTANCE_ID": instance,
        "FOLDLINE_HTTP_PORT": str(http_port),
        "FOLDLINE_LOG_FORMAT": "json",
        # One engine process, as these tests assert on one member per instance id; test_handler_workers.py
        # runs several (the default in a pod is one per CPU).
        "FOLDLINE_WORKERS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        **(extra_env or {}),
    }
    log = log_dir / f"handler-{instance}.log"
    with log.open("ab") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "foldline.cli", "command-handler", "--aggregate", aggregate_path],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return HandlerProcess(proc, log)


def start_policy(
    bootstrap: str,
    policy_path: str,
    state_dir: Path,
    instance: str,
    log_dir: Path,
    extra_env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> HandlerProcess:
    """``foldline policy`` as a real child process."""
    env = {
        **os.environ,
        "FOLDLINE_KAFKA_BOOTSTRAP": bootstrap,
        "FOLDLINE_STATE_DIR": str(state_dir),
        "FOLDLINE_INSTANCE_ID": instance,
        "FOLDLINE_HTTP_PORT": "0",
        "FOLDLINE_LOG_FORMAT": "json",
        "FOLDLINE_COMMIT_INTERVAL_MS": "20",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        **(extra_env or {}),
    }
    log = log_dir / f"policy-{instance}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "foldline.cli", "policy", "--policy", policy_path, *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return HandlerProcess(proc, log)
