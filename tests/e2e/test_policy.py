"""A Policy end to end: its state topic, its worker Deployment (run locally from its pod spec), Ready, and
status figures read from Kafka (lag, pending deadlines); a Policy naming a missing aggregate waits, clearly."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from foldline.examples.invoices.policies import overdue_at
from foldline.topics import PolicyTopics, TopicNames, delete_topics, policy_group
from foldline_operator.kube import Kube
from tests.e2e.support import (
    API,
    ESA,
    LocalPod,
    OperatorProcess,
    condition,
    create,
    manifest,
    patch,
    start_pods,
    wait_for,
)
from tests.kafka_support import command, send, wait_for_results

pytestmark = pytest.mark.e2e

LINE = {"line_id": "l1", "description": "work", "quantity": 1, "unit_price": "1.00"}
DUE = [date(2099, 1, 10), date(2099, 1, 5), date(2099, 2, 1)]


@pytest.fixture
def policy_topics(kafka_admin: AdminClient) -> Iterator[list[str]]:
    """Topics deleted after the test."""
    made: list[str] = []
    yield made
    delete_topics(kafka_admin, made)


def policy(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    found = kube.get(API, "Policy", namespace, name)
    assert found is not None
    return found


def metric_sums(port: int, policy: str) -> dict[str, float]:
    """Each foldline_policy_* metric of ``policy`` on the worker's /metrics, summed over its other labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("foldline_policy_") and f'policy="{policy}"' in line:
            metric, value = line.split("{", 1)[0], float(line.rsplit(" ", 1)[1])
            out[metric] = out.get(metric, 0.0) + value
    return out


def topic_config(admin: AdminClient, topic: str) -> dict[str, str]:
    futures = admin.describe_configs([ConfigResource("topic", topic)])
    return {k: v.value for k, v in next(iter(futures.values())).result(30).items()}


def test_policy_runs_its_worker_and_reports_lag_and_deadlines(
    kube: Kube,
    operator: OperatorProcess,
    namespace: str,
    kafka_bootstrap: str,
    kafka_admin: AdminClient,
    aggregate_name: Callable[[], str],
    policy_topics: list[str],
    tmp_path: Path,
) -> None:
    agg = aggregate_name()
    name = f"{agg}-overdue"
    policy_topics += [PolicyTopics(name).state(agg), PolicyTopics(name).dead_letters]
    create(
        kube,
        manifest(
            ESA,
            agg,
            namespace,
            {
                "aggregate": f"tests.named_invoices:{agg.replace('-', '_')}",
                "image": "foldline:dev",
                "partitions": 2,
                "replicationFactor": 1,
                "kafka": {"bootstrapServers": kafka_bootstrap},
            },
        ),
    )
    local: list[LocalPod] = []
    try:
        local += start_pods(kube, f"{agg}-command-handler", namespace, tmp_path)
        create(
            kube,
            manifest(
                "Policy",
                "overdue",
                namespace,
                {
                    "policy": f"tests.named_overdue:{agg.replace('-', '_')}",
                    "policyName": name,
                    "sources": [{"name": agg}],
                },
            ),
        )
        worker = wait_for(
            "the worker Deployment", lambda: kube.get("apps/v1", "Deployment", namespace, "overdue-policy")
        )
        container = worker["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == [
            "foldline",
            "policy",
            "--policy",
            f"tests.named_overdue:{agg.replace('-', '_')}",
        ]
        owner = worker["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("Policy", "overdue", True)
        assert worker["metadata"]["labels"]["foldline.io/policy"] == name
        # Applied right after the Deployment, in the same pass.
        wait_for(
            "its PodDisruptionBudget", lambda: kube.get("policy/v1", "PodDisruptionBudget", namespace, "overdue-policy")
        )

        # The state topic: compacted, with the source's partitions (the operator made it, not the worker).
        state_topic = PolicyTopics(name).state(agg)
        described = kafka_admin.list_topics(timeout=30).topics
        assert len(described[state_topic].partitions) == 2
        assert PolicyTopics(name).dead_letters in described
        assert topic_config(kafka_admin, state_topic)["cleanup.policy"] == "compact"

        # No pod runs yet: not Ready, and the status says which part waits.
        waiting = wait_for(
            "a status", lambda: (p := policy(kube, namespace, "overdue")).get("status", {}).get("conditions") and p
        )
        assert condition(waiting, "Ready")["status"] == "False"
        assert condition(waiting, "SourcesReady")["status"] == "True"
        assert condition(waiting, "TopicsReady")["status"] == "True"
        assert condition(waiting, "WorkerReady")["status"] == "False"

        local += start_pods(kube, "overdue-policy", namespace, tmp_path)

        def ready() -> dict[str, Any] | None:
            p = policy(kube, namespace, "overdue")
            current = p["status"].get("observedGeneration") == p["metadata"]["generation"]
            return p if current and condition(p, "Ready").get("status") == "True" else None

        done = wait_for("the Policy Ready", ready, 90)
        assert done["status"]["consumerGroup"] == policy_group(name)
        assert done["status"]["topics"] == [state_topic, PolicyTopics(name).dead_letters]
        assert done["status"]["readyReplicas"] == 1

        # Three invoices sent: three deadlines, the earliest the next; one paid first: two left.
        ids = [f"inv-{i}" for i in range(3)]
        creates = [
            command(
                a,
                "CreateInvoice",
                {"customer": "ACME", "currency": "EUR", "issue_date": "2098-12-01", "due_date": d.isoformat()},
            )
            for a, d in zip(ids, DUE, strict=True)
        ]
        send(kafka_bootstrap, TopicNames(agg).commands, creates)
        send(kafka_bootstrap, TopicNames(agg).commands, [command(a, "AddLineItem", LINE) for a in ids])
        send(kafka_bootstrap, TopicNames(agg).commands, [command(a, "SendInvoice") for a in ids])
        wait_for_results(kafka_bootstrap, agg, 9, timeout=60)

        seen: list[dict[str, Any]] = []

        def figures(count: int) -> Callable[[], dict[str, Any] | None]:
            def probe() -> dict[str, Any] | None:
                seen.append(policy(kube, namespace, "overdue")["status"])
                s = seen[-1]
                return s if s.get("scheduledDeadlines") == count and s.get("lag") == 0 else None

            return probe

        try:
            status = wait_for("three deadlines, no lag", figures(3), 60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; status: {seen[-1] if seen else None}") from None
        assert status["nextDeadline"] == overdue_at(min(DUE)).strftime("%Y-%m-%dT%H:%M:%SZ")

        pay = {"payment_id": "p1", "amount": "1.00", "currency": "EUR"}
        send(kafka_bootstrap, TopicNames(agg).commands, [command(ids[1], "RecordPayment", pay)])
        status = wait_for("the paid invoice's deadline cancelled", figures(2), 60)
        assert status["nextDeadline"] == overdue_at(DUE[0]).strftime("%Y-%m-%dT%H:%M:%SZ")

        # The worker's own figures agree: 11 events (3 x created, line added, sent; paid: recorded, paid).
        worker_pod = local[-1]

        def worker_figures() -> dict[str, float] | None:
            found = metric_sums(worker_pod.port, name)
            wanted = {
                "foldline_policy_events_total": 11.0,
                "foldline_policy_deadlines_scheduled": 2.0,
                "foldline_policy_consumer_lag": 0.0,
                "foldline_policy_dead_letters_total": 0.0,
            }
            return found if all(found.get(k) == v for k, v in wanted.items()) else None

        wait_for("the worker's metrics", worker_figures, 60)

        # Kafka out of reach: the figures are removed (unknown), not left at their last values.
        patch(kube, ESA, namespace, agg, {"spec": {"kafka": {"bootstrapServers": "127.0.0.1:1"}}})

        def unknown() -> dict[str, Any] | None:
            p = policy(kube, namespace, "overdue")
            gone = not {"lag", "scheduledDeadlines", "nextDeadline"} & set(p["status"])
            return p if gone and condition(p, "Ready")["status"] == "False" else None

        away = wait_for("the figures unknown", unknown, 90)
        assert condition(away, "Ready")["reason"] in ("SourcesNotReady", "TopicsNotReady")
        patch(kube, ESA, namespace, agg, {"spec": {"kafka": {"bootstrapServers": kafka_bootstrap}}})
        wait_for("the figures known again", figures(2), 90)
    finally:
        for p in local:
            p.stop()


def test_policy_naming_a_missing_aggregate_waits_with_a_clear_condition(
    kube: Kube, operator: OperatorProcess, namespace: str
) -> None:
    create(
        kube,
        manifest(
            "Policy",
            "orphan",
            namespace,
            {"policy": "foldline.examples.invoices:OverdueOnDueDate", "sources": [{"name": "no-such-aggregate"}]},
        ),
    )

    def settled() -> dict[str, Any] | None:
        p = policy(kube, namespace, "orphan")
        return p if condition(p, "SourcesReady") else None

    found = wait_for("a SourcesReady condition", settled, 30)
    sources = condition(found, "SourcesReady")
    assert (sources["status"], sources["reason"]) == ("False", "AggregateNotFound")
    assert "no-such-aggregate" in sources["message"]
    assert (condition(found, "Ready")["status"], condition(found, "Ready")["reason"]) == ("False", "SourcesNotReady")
    assert found["status"]["observedGeneration"] == found["metadata"]["generation"]
    assert kube.get("apps/v1", "Deployment", namespace, "orphan-policy") is None
    operator.alive_or_fail()
