"""Topic management against the real broker: configs, idempotence, and partition changes refused."""

from __future__ import annotations

import time

import pytest
from confluent_kafka.admin import ConfigResource

from foldline import TopicMismatchError, TopicNames, aggregate_topics, delete_topics, ensure_topics, partition_for
from tests.kafka_support import producer, read_topic

pytestmark = pytest.mark.kafka


def configs(admin, topic):
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return {k: v.value for k, v in admin.describe_configs([resource])[resource].result(10).items()}


def partitions(admin, topic):
    return len(admin.list_topics(topic, timeout=10).topics[topic].partitions)


def test_creates_five_copartitioned_topics_with_the_right_configs(kafka_admin, unique_name):
    name = unique_name("top")
    report = ensure_topics(kafka_admin, aggregate_topics(name, 4))
    names = TopicNames(name)
    assert sorted(report.created) == sorted(names.all())
    assert {partitions(kafka_admin, t) for t in names.all()} == {4}
    assert configs(kafka_admin, names.snapshots)["cleanup.policy"] == "compact"
    assert configs(kafka_admin, names.events)["retention.ms"] == "-1"
    assert configs(kafka_admin, names.results)["retention.ms"] == str(3600 * 1000)
    again = ensure_topics(kafka_admin, aggregate_topics(name, 4))  # idempotent
    assert not again.created and sorted(again.unchanged) == sorted(names.all())


def test_shrink_and_silent_growth_are_refused_growth_with_opt_in_works(kafka_admin, unique_name):
    name = unique_name("top")
    ensure_topics(kafka_admin, aggregate_topics(name, 3))
    with pytest.raises(TopicMismatchError, match="cannot shrink") as shrink:
        ensure_topics(kafka_admin, aggregate_topics(name, 2))
    assert shrink.value.reason == "PartitionShrinkRefused"
    with pytest.raises(TopicMismatchError, match="opt-in") as grow:
        ensure_topics(kafka_admin, aggregate_topics(name, 5))
    assert grow.value.reason == "PartitionGrowthRefused"
    assert {partitions(kafka_admin, t) for t in TopicNames(name).all()} == {3}  # nothing changed
    report = ensure_topics(kafka_admin, aggregate_topics(name, 5), allow_partition_growth=True)
    assert sorted(report.grown) == sorted(TopicNames(name).all())
    assert {partitions(kafka_admin, t) for t in TopicNames(name).all()} == {5}


def test_what_the_broker_refuses_is_not_unavailability_and_a_replication_change_is_reported(kafka_admin, unique_name):
    name = unique_name("top")
    # One broker: three replicas cannot be placed. The broker refuses; Kafka is reachable.
    with pytest.raises(TopicMismatchError, match="refused by Kafka") as refused:
        ensure_topics(kafka_admin, aggregate_topics(name, 1, replication_factor=3))
    assert refused.value.reason == "InvalidReplicationFactor"
    assert ensure_topics(kafka_admin, aggregate_topics(name, 1)).replication == {}
    # Existing topics keep their replication factor; a different declared one is reported, not applied.
    report = ensure_topics(kafka_admin, aggregate_topics(name, 1, replication_factor=3))
    assert report.replication == {t: 1 for t in TopicNames(name).all()}
    delete_topics(kafka_admin, TopicNames(name).all())


def test_drifted_retention_is_put_back(kafka_admin, unique_name):
    from foldline.topics import Retention

    name = unique_name("top")
    ensure_topics(kafka_admin, aggregate_topics(name, 1))
    report = ensure_topics(kafka_admin, aggregate_topics(name, 1, retention=Retention(results_ms=60_000)))
    assert TopicNames(name).results in report.reconfigured
    assert configs(kafka_admin, TopicNames(name).results)["retention.ms"] == "60000"


def test_delete_topics(kafka_admin, unique_name):
    name = unique_name("top")
    ensure_topics(kafka_admin, aggregate_topics(name, 1))
    assert sorted(delete_topics(kafka_admin, TopicNames(name).all())) == sorted(TopicNames(name).all())
    assert delete_topics(kafka_admin, TopicNames(name).all()) == []


def test_our_murmur2_places_keys_where_the_client_does(kafka_bootstrap, kafka_admin, unique_name):
    name = unique_name("part")
    ensure_topics(kafka_admin, aggregate_topics(name, 7))
    topic = TopicNames(name).commands
    p = producer(kafka_bootstrap)
    keys = [f"invoice-{i}" for i in range(200)] + ["ü-ñ", "a", "21"]
    for key in keys:
        p.produce(topic, b"{}", key.encode())
    p.flush(10)
    placed = {m.key().decode(): m.partition() for m in read_topic(kafka_bootstrap, topic)}
    assert placed == {key: partition_for(key, 7) for key in keys}


def test_a_benchmarks_topics_go_when_it_ends(kafka_bootstrap, kafka_admin):
    from bench import support

    name = support.new_aggregate(kafka_bootstrap, 2, "bench-clean")
    assert set(TopicNames(name).all()) <= set(kafka_admin.list_topics(timeout=10).topics)
    support.delete_created_topics()  # what atexit runs when the benchmark's process ends
    deadline = time.monotonic() + 30  # metadata may list a topic a moment after its deletion
    while set(TopicNames(name).all()) & set(kafka_admin.list_topics(timeout=10).topics):
        assert time.monotonic() < deadline, "the benchmark's topics are still there"
        time.sleep(0.2)
    assert support._created == []
