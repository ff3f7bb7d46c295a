"""The pieces of a multi-worker handler pod that need no process: CPUs, worker identities, merged metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from foldline.errors import ConfigurationError
from foldline.handler.workers import pod_members, remove_worker_directories, worker_index, worker_settings
from foldline.observability.merge import Families, merge
from foldline.settings import HandlerSettings, available_cpus


def test_cpus_follow_a_cgroup_v2_limit_rounded_up(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert available_cpus(tmp_path) == min(2, available_cpus(tmp_path / "none"))
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == available_cpus(tmp_path / "none") >= 1


def test_cpus_follow_a_cgroup_v1_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert available_cpus(tmp_path) == available_cpus(tmp_path / "none")


def test_workers_setting_defaults_to_the_cpus_and_one_keeps_a_single_process() -> None:
    assert HandlerSettings.from_env({}).workers == 1
    assert HandlerSettings.from_env({"FOLDLINE_WORKERS": "auto"}).workers == available_cpus()
    assert HandlerSettings.from_env({"FOLDLINE_WORKERS": "3"}).workers == 3
    assert HandlerSettings.from_env({"FOLDLINE_WORKERS": "1"}).workers == 1
    assert HandlerSettings().workers == 1


def test_worker_identity_is_stable_per_index_and_worker_zero_keeps_the_pods() -> None:
    pod = HandlerSettings(instance_id="invoices-0", state_dir=Path("/state"), cache_size=20_000, workers=2)
    first, second = worker_settings(pod, 0), worker_settings(pod, 1)
    assert (first.instance_id, first.state_dir) == ("invoices-0", Path("/state"))
    # The stores are the pod's: every worker opens them in the same directory (one at a time).
    assert (second.instance_id, second.state_dir) == ("invoices-0-w1", Path("/state"))
    assert first.cache_size == second.cache_size == 10_000  # the pod's memory stays one process's


def test_pod_members_are_every_workers_instance_id_from_any_worker() -> None:
    pod = HandlerSettings(instance_id="invoices-0", workers=3)
    expected = frozenset({"invoices-0", "invoices-0-w1", "invoices-0-w2"})
    assert pod_members(worker_settings(pod, 0), 0) == expected
    assert pod_members(worker_settings(pod, 2), 2) == expected
    assert pod_members(HandlerSettings(instance_id="solo"), None) == frozenset({"solo"})


def test_old_worker_directories_are_removed_and_the_pods_stores_kept(tmp_path: Path) -> None:
    (tmp_path / "worker-1" / "invoices" / "partition-0").mkdir(parents=True)
    (tmp_path / "invoices" / "partition-0").mkdir(parents=True)
    (tmp_path / "worker-notes").mkdir()
    remove_worker_directories(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["invoices", "worker-notes"]
    remove_worker_directories(tmp_path / "absent")  # a fresh volume: nothing to do


def _exposition(accepted: float, lag_partition: str, started: float) -> Families:
    registry = CollectorRegistry()
    Counter("foldline_commands_total", "Commands", ["aggregate", "status"], registry=registry).labels(
        "inv", "accepted"
    ).inc(accepted)
    Histogram("foldline_batch_commands", "Batch", ["aggregate"], buckets=(1, 10), registry=registry).labels(
        "inv"
    ).observe(accepted)
    Gauge("foldline_consumer_lag", "Lag", ["partition"], registry=registry).labels(lag_partition).set(7)
    Gauge("process_start_time_seconds", "Start", registry=registry).set(started)
    Gauge("process_resident_memory_bytes", "RSS", registry=registry).set(100)
    return Families.parse(generate_latest(registry).decode())


def test_merged_metrics_sum_the_workers_series() -> None:
    text = merge([_exposition(3, "0", 50.0), _exposition(5, "1", 40.0)]).render().decode()
    assert 'foldline_commands_total{aggregate="inv",status="accepted"} 8.0' in text
    assert 'foldline_batch_commands_bucket{aggregate="inv",le="10.0"} 2.0' in text
    assert 'foldline_batch_commands_count{aggregate="inv"} 2.0' in text
    assert 'foldline_consumer_lag{partition="0"} 7.0' in text and 'foldline_consumer_lag{partition="1"} 7.0' in text
    assert "process_start_time_seconds 40.0" in text
    assert "process_resident_memory_bytes 200.0" in text
    assert text.count("# TYPE foldline_commands_total counter") == 1


def test_a_retired_worker_keeps_its_counts_but_not_its_gauges() -> None:
    retired = Families()
    retired.add(_exposition(3, "0", 50.0), cumulative_only=True)
    text = merge([retired, _exposition(1, "1", 60.0)]).render().decode()
    assert 'foldline_commands_total{aggregate="inv",status="accepted"} 4.0' in text  # never backwards
    assert 'foldline_consumer_lag{partition="0"}' not in text  # the partition is someone else's now
    assert 'foldline_consumer_lag{partition="1"} 7.0' in text


def test_a_worker_index_is_read_from_the_environment_and_checked() -> None:
    assert worker_index({}) is None
    assert worker_index({"FOLDLINE_WORKER_INDEX": "1"}) == 1
    with pytest.raises(ConfigurationError, match="FOLDLINE_WORKER_INDEX"):
        worker_index({"FOLDLINE_WORKER_INDEX": "one"})
