"""An EventSourcedAggregate end to end: real API server, real Kafka, the real operator process, and the
command handler the operator declares, run as a local process from its pod spec."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource

from foldline.topics import DAY_MS, TopicNames
from foldline_operator.kube import Kube, KubeError
from tests.e2e.support import (
    API,
    ESA,
    OperatorProcess,
    condition,
    create,
    events_of,
    manifest,
    patch,
    start_pods,
    wait_for,
)
from tests.kafka_support import command, send, wait_for_results

pytestmark = pytest.mark.e2e

CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}


def topic_state(admin: AdminClient, name: str) -> tuple[int, dict[str, str]] | None:
    topic = admin.list_topics(name, timeout=10).topics.get(name)
    if topic is None or topic.error is not None:
        return None
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    try:
        configs = admin.describe_configs([resource])[resource].result(10)
    except KafkaException as exc:
        # Metadata can still list a topic whose deletion the controller has already carried out.
        if exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return None
        raise
    return len(topic.partitions), {k: str(v.value) for k, v in configs.items()}


def esa(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    found = kube.get(API, ESA, namespace, name)
    assert found is not None
    return found


def settled(
    kube: Kube, namespace: str, name: str, type_: str, status: str, reason: str | None = None, timeout: float = 60
) -> dict[str, Any]:
    """Wait until the condition reads ``status`` (and ``reason``) for the current generation."""

    def probe() -> dict[str, Any] | None:
        obj = esa(kube, namespace, name)
        c = condition(obj, type_)
        generation = obj["metadata"]["generation"]
        ok = (
            c.get("status") == status
            and (reason is None or c.get("reason") == reason)
            and obj["status"].get("observedGeneration") == generation
        )
        return obj if ok else None

    return wait_for(f"{name}: {type_}={status} {reason or ''}", probe, timeout)


def statefulset(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return wait_for(f"StatefulSet {name}", lambda: kube.get("apps/v1", "StatefulSet", namespace, name))


def handler_replicas(kube: Kube, namespace: str, name: str) -> int:
    return int(statefulset(kube, namespace, f"{name}-command-handler")["spec"]["replicas"])


def test_aggregate_lifecycle(
    kube: Kube,
    operator: OperatorProcess,
    namespace: str,
    kafka_bootstrap: str,
    kafka_admin: AdminClient,
    aggregate_name: Callable[[], str],
    tmp_path: Path,
) -> None:
    name = aggregate_name()
    names = TopicNames(name)
    # Kafka settings through a Secret, as a TLS/SASL cluster would have them (plaintext here).
    create(
        kube,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "kafka", "namespace": namespace},
            "stringData": {"security.protocol": "plaintext"},
        },
    )
    spec = {
        "aggregate": f"tests.named_invoices:{name.replace('-', '_')}",
        "image": "foldline:dev",
        "partitions": 3,
        "replicationFactor": 1,
        "retention": {"commands": "2d", "results": "90m"},
        "kafka": {"bootstrapServers": kafka_bootstrap, "secretRef": {"name": "kafka"}},
        "handlers": {"replicas": 1, "storage": {"storeKind": "sqlite", "size": "2Gi"}},
    }
    create(kube, manifest(ESA, name, namespace, spec))

    # Topics in the real Kafka, with the declared configs.
    settled(kube, namespace, name, "TopicsReady", "True", "Verified")
    commands = topic_state(kafka_admin, names.commands)
    assert commands is not None and commands[0] == 3
    assert commands[1]["retention.ms"] == str(2 * DAY_MS) and commands[1]["cleanup.policy"] == "delete"
    results = topic_state(kafka_admin, names.results)
    assert results is not None and results[1]["retention.ms"] == str(90 * 60 * 1000)
    snapshots = topic_state(kafka_admin, names.snapshots)
    assert snapshots is not None and snapshots[1]["cleanup.policy"] == "compact"
    events = topic_state(kafka_admin, names.events)
    assert events is not None and events[1]["retention.ms"] == "-1"

    # The command-handler StatefulSet, owned by the resource: a claim per pod, a headless Service.
    handler = statefulset(kube, namespace, f"{name}-command-handler")
    owner = esa(kube, namespace, name)
    assert handler["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
    [claim] = handler["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state" and claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert handler["spec"]["serviceName"] == f"{name}-command-handler"
    service = kube.get("v1", "Service", namespace, f"{name}-command-handler")
    assert service is not None and service["spec"]["clusterIP"] == "None"
    pod = handler["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["foldline", "command-handler", "--aggregate", spec["aggregate"]]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {"name": "FOLDLINE_STORE", "value": "sqlite"} in container["env"]
    assert {
        "name": "FOLDLINE_KAFKA_SECURITY_PROTOCOL",
        "valueFrom": {"secretKeyRef": {"name": "kafka", "key": "security.protocol"}},
    } in container["env"]
    assert {"name": "FOLDLINE_STATIC_MEMBERSHIP", "value": "true"} in container["env"]
    assert "state" not in {v["name"] for v in pod["volumes"]}
    assert kube.get("policy/v1", "PodDisruptionBudget", namespace, f"{name}-command-handler") is not None
    # The StatefulSet controller made pod 0 and its claim (Pending here: no provisioner).
    pvc = wait_for(
        "the claim of pod 0",
        lambda: kube.get("v1", "PersistentVolumeClaim", namespace, f"state-{name}-command-handler-0"),
    )
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"

    # The pod spec's command and environment, run here: it handles a command.
    local = start_pods(kube, f"{name}-command-handler", namespace, tmp_path)
    try:
        # The downward API, resolved: the stable pod name <statefulset>-<ordinal> is the instance id.
        assert local[0].env["FOLDLINE_INSTANCE_ID"] == local[0].name == f"{name}-command-handler-0"
        send(kafka_bootstrap, names.commands, [command("inv-1", "CreateInvoice", CREATE, command_id="c-1")])
        [result] = wait_for_results(kafka_bootstrap, name, 1, timeout=60)
        assert (result.command_id, result.status, result.version) == ("c-1", "accepted", 1)

        ready = settled(kube, namespace, name, "Ready", "True")
        assert ready["status"]["replicas"] == 1 and ready["status"]["readyReplicas"] == 1
        good = ready["status"]["lastGoodSpec"]
        assert good == ready["status"]["lastAppliedSpec"]
        assert good["generation"] == ready["metadata"]["generation"] and json.loads(good["spec"]) == ready["spec"]
        assert condition(ready, "HandlersReady")["reason"] == "Available"
        wait_for("lag 0 in status", lambda: esa(kube, namespace, name)["status"].get("lag") == 0, 30)

        # Scaling: the spec, and the scale subresource, reach the StatefulSet.
        patch(kube, ESA, namespace, name, {"spec": {"handlers": {"replicas": 2}}})
        wait_for("2 replicas", lambda: handler_replicas(kube, namespace, name) == 2)
        kube.request(
            "PATCH",
            f"/apis/{API}/namespaces/{namespace}/eventsourcedaggregates/{name}/scale",
            body={"spec": {"replicas": 3}},
            content_type="application/merge-patch+json",
        )
        wait_for("3 replicas", lambda: handler_replicas(kube, namespace, name) == 3)
        before = statefulset(kube, namespace, f"{name}-command-handler")

        # Fewer partitions: refused at admission, by the CRD's transition rule.
        with pytest.raises(KubeError, match=r"spec\.partitions can never shrink"):
            patch(kube, ESA, namespace, name, {"spec": {"partitions": 2}})
        # A second resource declaring fewer partitions for the same topics gets past admission (it is new):
        # the operator refuses it, says why, and creates nothing for it.
        other = f"{name}-b"
        create(kube, manifest(ESA, other, namespace, {**spec, "aggregateName": name, "partitions": 2}))
        refused = settled(kube, namespace, other, "TopicsReady", "False", "PartitionShrinkRefused")
        assert "cannot shrink" in condition(refused, "TopicsReady")["message"]
        assert condition(refused, "Ready")["status"] == "False"
        assert refused["status"]["partitions"] == 3  # what the topics have (the Partitions column)
        assert topic_state(kafka_admin, names.commands)[0] == 3  # type: ignore[index]
        assert kube.get("apps/v1", "StatefulSet", namespace, f"{other}-command-handler") is None
        assert "PartitionShrinkRefused" in {reason for reason, _ in events_of(kube, namespace, other)}
        kube.delete(API, ESA, namespace, other)  # Retain: the topics stay
        wait_for("the second resource gone", lambda: kube.get(API, ESA, namespace, other) is None)

        # More partitions without the opt-in: refused by the operator, nothing changed (not even the replicas
        # asked for with it).
        patch(kube, ESA, namespace, name, {"spec": {"partitions": 4, "handlers": {"replicas": 1}}})
        refused = settled(kube, namespace, name, "TopicsReady", "False", "PartitionGrowthRefused")
        assert "allowPartitionGrowth" in condition(refused, "TopicsReady")["message"]
        assert all(topic_state(kafka_admin, t)[0] == 3 for t in names.all())  # type: ignore[index]
        after = statefulset(kube, namespace, f"{name}-command-handler")
        assert (after["metadata"]["generation"], after["spec"]["replicas"]) == (before["metadata"]["generation"], 3)
        status = refused["status"]
        assert status["partitions"] == 3
        # What runs is still the last applied spec: the refused one never reached the workloads.
        assert status["lastAppliedSpec"]["generation"] < refused["metadata"]["generation"]
        assert json.loads(status["lastAppliedSpec"]["spec"])["partitions"] == 3

        # With the opt-in, every topic grows, and the replicas asked for meanwhile are applied.
        patch(kube, ESA, namespace, name, {"spec": {"allowPartitionGrowth": True}})
        grown = settled(kube, namespace, name, "TopicsReady", "True")
        assert grown["status"]["partitions"] == 4
        assert all(topic_state(kafka_admin, t)[0] == 4 for t in names.all())  # type: ignore[index]
        wait_for("1 replica", lambda: handler_replicas(kube, namespace, name) == 1)
        reasons = {reason for reason, _ in events_of(kube, namespace, name)}
        assert {
            "TopicCreated",
            "StatefulSetCreated",
            "StatefulSetUpdated",
            "PartitionGrowthRefused",
            "TopicGrown",
        } <= reasons
    finally:
        for p in local:
            p.stop()
    assert 'foldline_operator_reconciles_total{kind="EventSourcedAggregate",result="ready"}' in operator.metrics()


def test_pause_annotation_stops_reconciliation(
    kube: Kube, operator: OperatorProcess, namespace: str, kafka_bootstrap: str, aggregate_name: Callable[[], str]
) -> None:
    name = aggregate_name()
    spec = {
        "aggregate": f"tests.named_invoices:{name.replace('-', '_')}",
        "image": "foldline:dev",
        "partitions": 2,
        "replicationFactor": 1,
        "kafka": {"bootstrapServers": kafka_bootstrap},
    }
    create(kube, manifest(ESA, name, namespace, spec))
    settled(kube, namespace, name, "TopicsReady", "True")
    statefulset(kube, namespace, f"{name}-command-handler")
    patch(
        kube,
        ESA,
        namespace,
        name,
        {"metadata": {"annotations": {"foldline.io/paused": "true"}}, "spec": {"handlers": {"replicas": 2}}},
    )
    paused = wait_for("paused", lambda: (o := esa(kube, namespace, name))["status"].get("paused") and o)
    assert condition(paused, "Ready")["reason"] == "Paused"
    assert paused["status"]["observedGeneration"] < paused["metadata"]["generation"]
    assert handler_replicas(kube, namespace, name) == 1
    patch(kube, ESA, namespace, name, {"metadata": {"annotations": {"foldline.io/paused": None}}})
    wait_for("unpaused: 2 replicas", lambda: handler_replicas(kube, namespace, name) == 2)


def test_autoscaling_follows_lag(
    kube: Kube, operator: OperatorProcess, namespace: str, kafka_bootstrap: str, aggregate_name: Callable[[], str]
) -> None:
    name = aggregate_name()
    spec = {
        "aggregate": f"tests.named_invoices:{name.replace('-', '_')}",
        "image": "foldline:dev",
        "partitions": 3,
        "replicationFactor": 1,
        "kafka": {"bootstrapServers": kafka_bootstrap},
        "handlers": {"autoscaling": {"minReplicas": 1, "maxReplicas": 3, "lagPerReplica": 4, "cooldownSeconds": 600}},
    }
    create(kube, manifest(ESA, name, namespace, spec))
    settled(kube, namespace, name, "TopicsReady", "True")
    wait_for("1 replica at no lag", lambda: handler_replicas(kube, namespace, name) == 1)
    # No handler runs, so every command is lag: 9 / 4 per replica -> 3 replicas (= partitions).
    send(kafka_bootstrap, TopicNames(name).commands, [command(f"inv-{i}", "CreateInvoice", CREATE) for i in range(9)])
    scaled = wait_for("lag 9", lambda: (o := esa(kube, namespace, name))["status"].get("lag") == 9 and o)
    wait_for("3 replicas", lambda: handler_replicas(kube, namespace, name) == 3)
    assert scaled["status"]["lastScaleTime"]
    assert condition(esa(kube, namespace, name), "Autoscaling")["reason"] == "Active"
    # `kubectl scale` (or an HPA) while autoscaling is on: the lag still decides, and the status says so.
    kube.request(
        "PATCH",
        f"/apis/{API}/namespaces/{namespace}/eventsourcedaggregates/{name}/scale",
        body={"spec": {"replicas": 2}},  # a change (1 is the default: the same value would record no writer)
        content_type="application/merge-patch+json",
        query={"fieldManager": "kubectl-scale"},
    )
    ignored = wait_for(
        "ScaleIgnored",
        lambda: (c := condition(esa(kube, namespace, name), "Autoscaling")).get("reason") == "ScaleIgnored" and c,
    )
    assert "kubectl-scale" in ignored["message"] and "autoscaling wins" in ignored["message"]
    assert handler_replicas(kube, namespace, name) == 3
    wait_for("a Warning Event", lambda: "ScaleIgnored" in {r for r, _ in events_of(kube, namespace, name)})


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
def test_deletion_policy(
    kube: Kube,
    operator: OperatorProcess,
    namespace: str,
    kafka_bootstrap: str,
    kafka_admin: AdminClient,
    aggregate_name: Callable[[], str],
    policy: str,
) -> None:
    name = aggregate_name()
    spec = {
        "aggregate": f"tests.named_invoices:{name.replace('-', '_')}",
        "image": "foldline:dev",
        "partitions": 1,
        "replicationFactor": 1,
        "deletionPolicy": policy,
        "kafka": {"bootstrapServers": kafka_bootstrap},
    }
    create(kube, manifest(ESA, name, namespace, spec))
    settled(kube, namespace, name, "TopicsReady", "True")
    # A finalizer only where the deletion has work to do: the topics of a Delete one.
    finalizers = esa(kube, namespace, name)["metadata"].get("finalizers") or []
    assert ("foldline.io/finalizer" in finalizers) == (policy == "Delete")
    kube.delete(API, ESA, namespace, name)
    wait_for("the resource gone", lambda: kube.get(API, ESA, namespace, name) is None, 60)
    if policy == "Retain":
        present = {t for t in TopicNames(name).all() if topic_state(kafka_admin, t) is not None}
        assert present == set(TopicNames(name).all())
    else:
        wait_for("topics deleted", lambda: all(topic_state(kafka_admin, t) is None for t in TopicNames(name).all()))
    expected = "TopicsRetained" if policy == "Retain" else "TopicsDeleted"
    wait_for(f"Event {expected}", lambda: expected in {r for r, _ in events_of(kube, namespace, name)})
