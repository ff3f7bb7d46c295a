"""Static group membership, as the operator's StatefulSet pods run it: a handler that restarts with its
instance id and its store gets its own partitions back, the other member sees no rebalance, and the store
it kept means no restore. Real handler processes, real broker, both group protocols."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from foldline.topics import TopicNames, handler_group
from tests.conftest import aggregate_path
from tests.kafka_support import HandlerProcess, command, send, start_handler, wait_for_results

pytestmark = pytest.mark.kafka
T = TypeVar("T")

CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}


def log_events(log: Path, since: int = 0) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines()[since:]:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def assigned(log: Path, since: int = 0) -> list[int]:
    return sorted(
        p for e in log_events(log, since) if e.get("event") == "partitions assigned" for p in e.get("partitions", [])
    )


_NOT_YET = (
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError._TIMED_OUT,
)


def members(admin: AdminClient, group: str) -> dict[str, list[int]]:
    """group.instance.id → partitions, from the broker's own view of the group."""
    try:
        # The request's own timeout ends it: a future left pending would hold the client at exit.
        description = admin.describe_consumer_groups([group], request_timeout=5)[group].result(timeout=30)
    except TimeoutError:  # the coordinator did not answer in time: ask again
        return {}
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        # A fresh group's coordinator may still be loading or moving: ask again (not flagged retriable here).
        if isinstance(error, KafkaError) and (error.retriable() or error.code() in _NOT_YET):
            return {}
        raise
    return {
        str(m.group_instance_id): sorted(tp.partition for tp in m.assignment.topic_partitions)
        for m in description.members
    }


def assert_running(*procs: HandlerProcess) -> None:
    """Each handler still runs: none died, e.g. aborted in the Kafka client's binding during a rebalance."""
    for proc in procs:
        assert proc.alive(), f"{proc.log.name} exited {proc.proc.returncode}: {proc.log.read_text()[-2000:]}"


def wait(what: str, probe: Callable[[], T | None], timeout: float = 180.0) -> T:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_a_restarted_static_member_keeps_its_partitions_and_its_store(
    kafka_bootstrap: str, kafka_admin: AdminClient, invoices_aggregate, tmp_path: Path, protocol: str
) -> None:
    cls = invoices_aggregate(partitions=2)
    path, group = aggregate_path(cls), handler_group(cls.name)
    env = {
        "FOLDLINE_STATIC_MEMBERSHIP": "true",
        "FOLDLINE_KAFKA_GROUP_PROTOCOL": protocol,
        # consume() waits this long for a first record: wide enough that the revocation KIP-848 sends right
        # behind h-0's first assignment (h-1 joins) lands in the same consume() call - the call in which a
        # client call made from the assignment callback once made the binding abort (handler/engine.py).
        "FOLDLINE_COMMIT_INTERVAL_MS": "1000",
    }

    def handler(instance: str) -> HandlerProcess:
        return start_handler(kafka_bootstrap, path, tmp_path / instance, instance, tmp_path, extra_env=env)

    first, other = handler("h-0"), handler("h-1")
    restarted: HandlerProcess | None = None
    try:

        def one_each() -> dict[str, list[int]] | None:
            assert_running(first, other)
            found = members(kafka_admin, group)
            return found if len(found) == 2 and all(found.values()) else None

        spread = wait("one partition each", one_each)
        assert set(spread) == {"h-0", "h-1"}  # the instance ids are the members' group.instance.id
        ids = [f"inv-{i}" for i in range(20)]  # both partitions get some
        send(kafka_bootstrap, TopicNames(cls.name).commands, [command(i, "CreateInvoice", CREATE) for i in ids])
        wait_for_results(kafka_bootstrap, cls.name, len(ids))

        # A rolling update's restart: SIGTERM, then the same instance id and state directory (the claim).
        other_lines = len(other.log.read_text().splitlines())
        first_lines = len(first.log.read_text().splitlines())
        assert first.terminate() == 0
        restarted = handler("h-0")
        wait("h-0 assigned again", lambda: assigned(first.log, first_lines))
        assert assigned(first.log, first_lines) == spread["h-0"]  # its own partitions, no others
        assert members(kafka_admin, group) == spread
        later = log_events(other.log, other_lines)
        assert not [e for e in later if str(e.get("event", "")).startswith("partitions ")], later  # no rebalance
        # Its store survived: nothing to restore (a restore logs "store restored" with the snapshot count).
        assert not [e for e in log_events(first.log, first_lines) if e.get("event") == "store restored"]

        more = [
            command(i, "AddLineItem", {"line_id": "x", "description": "d", "quantity": 1, "unit_price": "1.00"})
            for i in ids
        ]
        send(kafka_bootstrap, TopicNames(cls.name).commands, more)
        results = wait_for_results(kafka_bootstrap, cls.name, 2 * len(ids))
        assert sorted(r.version for r in results if r.command_id in {c.command_id for c in more}) == [2] * len(ids)
        assert_running(restarted, other)
    finally:
        for proc in (restarted, other, first):
            if proc is not None and proc.alive():
                proc.terminate()


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_a_static_member_killed_and_back_at_once_owns_partitions_again(
    kafka_bootstrap: str, kafka_admin: AdminClient, invoices_aggregate, tmp_path: Path, protocol: str
) -> None:
    """A crash (SIGKILL: no leave sent) and an immediate restart with the same id and store. Classic: its
    partitions back at once, the other member sees nothing. KIP-848: the broker refuses the id while the dead
    member's session lasts (UNRELEASED_INSTANCE_ID, fatal for that client); the handler rebuilds its clients
    until it is let in, and owns partitions again - it does not sit there, ready, with none."""
    cls = invoices_aggregate(partitions=2)
    path, group = aggregate_path(cls), handler_group(cls.name)
    env = {"FOLDLINE_STATIC_MEMBERSHIP": "true", "FOLDLINE_KAFKA_GROUP_PROTOCOL": protocol}

    def handler(instance: str) -> HandlerProcess:
        return start_handler(kafka_bootstrap, path, tmp_path / instance, instance, tmp_path, extra_env=env)

    first, other = handler("h-0"), handler("h-1")
    restarted: HandlerProcess | None = None
    try:

        def one_each() -> dict[str, list[int]] | None:
            assert_running(*(p for p in (restarted or first, other)))
            found = members(kafka_admin, group)
            return found if len(found) == 2 and all(found.values()) else None

        spread = wait("one partition each", one_each)
        ids = [f"inv-{i}" for i in range(20)]
        send(kafka_bootstrap, TopicNames(cls.name).commands, [command(i, "CreateInvoice", CREATE) for i in ids])
        wait_for_results(kafka_bootstrap, cls.name, len(ids))

        other_lines = len(other.log.read_text().splitlines())
        first_lines = len(first.log.read_text().splitlines())
        first.kill()
        restarted = handler("h-0")
        more = [
            command(i, "AddLineItem", {"line_id": "x", "description": "d", "quantity": 1, "unit_price": "1.00"})
            for i in ids
        ]
        send(kafka_bootstrap, TopicNames(cls.name).commands, more)
        results = wait_for_results(kafka_bootstrap, cls.name, 2 * len(ids))
        assert sorted(r.version for r in results if r.command_id in {c.command_id for c in more}) == [2] * len(ids)
        wait("h-0 a member with partitions again", one_each)
        if protocol == "classic":
            assert assigned(first.log, first_lines) == spread["h-0"]
            later = log_events(other.log, other_lines)
            assert not [e for e in later if str(e.get("event", "")).startswith("partitions ")], later
        assert_running(restarted, other)
    finally:
        for proc in (restarted, other, first):
            if proc is not None and proc.alive():
                proc.terminate()
