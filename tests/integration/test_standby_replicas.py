"""Standby replicas against the real broker: a handler process keeps a warm copy of the partition another
one owns, from the snapshots changelog; when the owner is SIGKILLed, the survivor takes the partition and
restores only the tail past its standby store's offset, and every command still has exactly one result."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from foldline.topics import TopicNames, handler_group
from tests.conftest import aggregate_path
from tests.faults_support import assert_exactly_once, free_port, workload
from tests.integration.test_static_membership import _NOT_YET, log_events, wait
from tests.kafka_support import HandlerProcess, read_topic, send, start_handler, wait_for_results

pytestmark = pytest.mark.kafka


def members(admin: AdminClient, group: str) -> dict[str, list[int]]:
    """Instance id (group.instance.id, else client.id: both are FOLDLINE_INSTANCE_ID) → partitions."""
    try:
        description = admin.describe_consumer_groups([group], request_timeout=5)[group].result(timeout=30)
    except TimeoutError:
        return {}
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and (error.retriable() or error.code() in _NOT_YET):
            return {}
        raise
    return {
        str(m.group_instance_id or m.client_id): sorted(tp.partition for tp in m.assignment.topic_partitions)
        for m in description.members
    }


def scrape(port: int) -> dict[tuple[str, str], float]:
    """(sample name, partition label) → value, from a handler's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, sample.labels.get("partition", ""))] = sample.value
    return out


def end_offset(topic: str, partition: int, bootstrap: str) -> int:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "standby-test", "isolation.level": "read_committed"}
    )
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1])
    finally:
        consumer.close()


def standby_current(port: int, partition: int) -> Callable[[], bool]:
    return lambda: scrape(port).get(("foldline_standby_lag", str(partition))) == 0


def restored(log: Path, partition: int, since: int) -> int:
    """Snapshots the handler restored into ``partition``'s store (its log's count; none logged means 0)."""
    return sum(
        int(e.get("snapshots", 0))
        for e in log_events(log, since)
        if e.get("event") == "store restored" and e.get("partition") == partition
    )


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_a_standby_follows_the_changelog_and_a_failover_restores_only_the_tail(
    kafka_bootstrap: str, kafka_admin: AdminClient, invoices_aggregate, tmp_path: Path, protocol: str
) -> None:
    cls = invoices_aggregate(partitions=2)
    path, group, topics = aggregate_path(cls), handler_group(cls.name), TopicNames(cls.name)
    env = {
        "FOLDLINE_STATIC_MEMBERSHIP": "true",
        "FOLDLINE_KAFKA_GROUP_PROTOCOL": protocol,  # under KIP-848 the ring names members by client.id
        "FOLDLINE_STANDBY_REPLICAS": "1",
    }
    ports = {"h-0": free_port(), "h-1": free_port()}

    def handler(instance: str) -> HandlerProcess:
        return start_handler(
            kafka_bootstrap, path, tmp_path / instance, instance, tmp_path, extra_env=env, http_port=ports[instance]
        )

    procs = {name: handler(name) for name in ports}
    try:
        spread = wait(
            "one partition each",
            lambda: (lambda m: m if len(m) == 2 and all(m.values()) else None)(members(kafka_admin, group)),
        )
        [doomed_partition] = spread["h-0"]
        wave_one = workload("sb", aggregates=40, per_aggregate=2)
        send(kafka_bootstrap, topics.commands, wave_one)
        wait_for_results(kafka_bootstrap, cls.name, len(wave_one))

        # h-1 keeps h-0's partition warm: it copies every committed snapshot of it, then has no lag.
        written = end_offset(topics.snapshots, doomed_partition, kafka_bootstrap)
        p = str(doomed_partition)

        def caught_up() -> dict[tuple[str, str], float] | None:
            m = scrape(ports["h-1"])
            copied = m.get(("foldline_standby_records_total", p), 0.0)
            return m if copied > 0 and m.get(("foldline_standby_lag", p)) == 0 else None

        metrics = wait("h-1's standby of h-0's partition to catch up", caught_up, timeout=60)
        assert metrics[("foldline_standby_partitions", "")] == 1
        assert ("foldline_standby_lag", str(spread["h-1"][0])) not in metrics  # never its own partition
        standing = [e for e in log_events(procs["h-1"].log) if e.get("event") == "standing by"]
        assert standing and standing[0]["partitions"] == [doomed_partition]
        snapshots_in_partition = int(metrics[("foldline_standby_records_total", p)])
        assert snapshots_in_partition > 0

        # More commands, then the owner dies mid-stream: its last transactions are the tail to restore.
        wave_two = workload("sb", aggregates=40, per_aggregate=3)[80:]
        send(kafka_bootstrap, topics.commands, wave_two)
        procs["h-0"].kill()
        since = len(procs["h-1"].log.read_text().splitlines())
        restored_before = scrape(ports["h-1"])[("foldline_store_restored_records_total", "")]

        wait("h-1 to own both partitions", lambda: members(kafka_admin, group).get("h-1") == [0, 1], timeout=120)
        everything = wave_one + wave_two
        wait_for_results(kafka_bootstrap, cls.name, len(everything))
        assert_exactly_once(kafka_bootstrap, cls, everything)  # so the warm store held every aggregate

        tail = end_offset(topics.snapshots, doomed_partition, kafka_bootstrap) - written
        full = sum(1 for m in read_topic(kafka_bootstrap, topics.snapshots) if m.partition() == doomed_partition)
        took = restored(procs["h-1"].log, doomed_partition, since)
        after = scrape(ports["h-1"])
        assert after[("foldline_store_restored_records_total", "")] - restored_before == took
        # Only what h-0 committed after the standby caught up (the offsets past `written`), not the whole
        # partition a restore without a standby reads.
        assert took <= tail
        assert took <= full - snapshots_in_partition < full
        assert ("foldline_standby_lag", p) not in after  # it owns the partition now: no longer a standby

        # h-0 comes back with its store: the group gives it a partition again, h-1 hands that one over and
        # stands by for it once more, h-0 for h-1's; still exactly once.
        procs["h-0"] = handler("h-0")
        spread = wait(
            "one partition each again",
            lambda: (lambda m: m if len(m) == 2 and all(m.values()) else None)(members(kafka_admin, group)),
        )
        for mine, theirs in (("h-0", "h-1"), ("h-1", "h-0")):
            [watched] = spread[theirs]
            wait(f"{mine} to stand by for partition {watched}", standby_current(ports[mine], watched), timeout=60)
        wave_three = workload("sb", aggregates=40, per_aggregate=4)[120:]
        send(kafka_bootstrap, topics.commands, wave_three)
        everything += wave_three
        wait_for_results(kafka_bootstrap, cls.name, len(everything))
        assert_exactly_once(kafka_bootstrap, cls, everything)
    finally:
        for proc in procs.values():
            if proc.alive():
                proc.terminate()
