"""Status that tells the truth, against the real API server: who wins when an HPA or a KEDA ScaledObject is
aimed at an aggregate that autoscales itself, and a broken aggregate that leaves its projections' last
lag and progress in place."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from foldline.topics import TopicNames
from foldline_operator.kube import Kube
from tests.e2e.support import (
    API,
    ESA,
    LocalPod,
    OperatorProcess,
    condition,
    create,
    events_of,
    manifest,
    patch,
    start_pods,
    wait_for,
)
from tests.e2e.test_aggregate import esa, handler_replicas, settled
from tests.kafka_support import command, send, wait_for_results

pytestmark = pytest.mark.e2e

CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}
#: The ScaledObject kind as KEDA's CRD serves it (group keda.sh, v1alpha1, namespaced, scaleTargetRef in
#: spec); KEDA itself does not run here, only its API, which is all the operator reads.
KEDA_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "scaledobjects.keda.sh"},
    "spec": {
        "group": "keda.sh",
        "scope": "Namespaced",
        "names": {"kind": "ScaledObject", "plural": "scaledobjects", "singular": "scaledobject", "shortNames": ["so"]},
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                    }
                },
            }
        ],
    },
}


def autoscaling(kube: Kube, namespace: str, name: str, reason: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        c = condition(esa(kube, namespace, name), "Autoscaling")
        return c if c.get("reason") == reason else None

    return wait_for(f"{name}: Autoscaling {reason}", probe, 60)


def target(name: str) -> dict[str, str]:
    return {"apiVersion": API, "kind": ESA, "name": name}


def test_an_hpa_or_scaled_object_beside_autoscaling_is_named_and_loses(
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
    autoscaling(kube, namespace, name, "Active")
    wait_for("1 replica at no lag", lambda: handler_replicas(kube, namespace, name) == 1)

    # An HPA aimed at the scale subresource: the lag still decides, and condition and Event name the HPA.
    hpa: dict[str, Any] = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "handlers-cpu", "namespace": namespace},
        "spec": {
            "scaleTargetRef": target(name),
            "minReplicas": 1,
            "maxReplicas": 3,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}},
                }
            ],
        },
    }
    create(kube, hpa)
    conflict = autoscaling(kube, namespace, name, "AutoscalerConflict")
    assert conflict["status"] == "True"
    assert "HorizontalPodAutoscaler handlers-cpu" in conflict["message"]
    assert "spec.handlers.autoscaling wins: 1 replicas from the lag" in conflict["message"]
    wait_for("a Warning Event", lambda: "AutoscalerConflict" in {r for r, _ in events_of(kube, namespace, name)})
    warning = [e for e in kube.list("v1", "Event", namespace) if e.get("reason") == "AutoscalerConflict"]
    assert warning and all(e["type"] == "Warning" for e in warning)
    assert handler_replicas(kube, namespace, name) == 1

    # An HPA aimed elsewhere is none of its business.
    kube.request("DELETE", f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/handlers-cpu")
    create(kube, {**hpa, "spec": {**hpa["spec"], "scaleTargetRef": {**target(name), "name": f"{name}-other"}}})
    autoscaling(kube, namespace, name, "Active")

    # A KEDA ScaledObject (its CRD installed now: before, its absence was a quiet 404), with the HPA KEDA
    # makes for it (owned by the ScaledObject): the ScaledObject is named, its HPA is not.
    kube.apply(KEDA_CRD)
    wait_for(
        "the ScaledObject kind served",
        lambda: kube.request("GET", f"/apis/keda.sh/v1alpha1/namespaces/{namespace}/scaledobjects") is not None,
    )
    scaled = create(
        kube,
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": "handlers-kafka", "namespace": namespace},
            "spec": {
                "scaleTargetRef": target(name),
                "triggers": [{"type": "kafka", "metadata": {"topic": TopicNames(name).commands, "lagThreshold": "5"}}],
            },
        },
    )
    owner = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": "handlers-kafka"}
    owner["uid"] = scaled["metadata"]["uid"]
    create(
        kube,
        {
            **hpa,
            "metadata": {"name": "keda-hpa-handlers-kafka", "namespace": namespace, "ownerReferences": [owner]},
        },
    )
    keda = autoscaling(kube, namespace, name, "AutoscalerConflict")
    assert "ScaledObject handlers-kafka" in keda["message"] and "keda-hpa" not in keda["message"]

    # Autoscaling off: the ScaledObject decides, and the condition says that instead (no Warning).
    patch(kube, ESA, namespace, name, {"spec": {"handlers": {"autoscaling": None}}})
    external = autoscaling(kube, namespace, name, "External")
    assert "ScaledObject handlers-kafka" in external["message"] and "the operator follows it" in external["message"]


def test_a_broken_aggregate_keeps_its_projections_lag_and_progress(
    kube: Kube,
    operator: OperatorProcess,
    namespace: str,
    kafka_bootstrap: str,
    aggregate_name: Callable[[], str],
    tmp_path: Path,
) -> None:
    agg = aggregate_name()
    spec = {
        "aggregate": f"tests.named_invoices:{agg.replace('-', '_')}",
        "image": "foldline:dev",
        "partitions": 2,
        "replicationFactor": 1,
        "kafka": {"bootstrapServers": kafka_bootstrap},
    }
    create(kube, manifest(ESA, agg, namespace, spec))
    database = tmp_path / "views.db"
    create(
        kube,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "views-db", "namespace": namespace},
            "stringData": {"url": f"sqlite:///{database}"},
        },
    )
    local: list[LocalPod] = []
    try:
        local += start_pods(kube, f"{agg}-command-handler", namespace, tmp_path)
        send(
            kafka_bootstrap,
            TopicNames(agg).commands,
            [command(f"inv-{i}", "CreateInvoice", {**CREATE, "customer": f"c{i}"}) for i in range(10)],
        )
        wait_for_results(kafka_bootstrap, agg, 10, timeout=60)
        create(
            kube,
            manifest(
                "Projection",
                "invoice-list",
                namespace,
                {
                    "aggregateRef": {"name": agg},
                    "projector": "tests.e2e.views:invoice_list_r1",
                    "revision": 1,
                    "database": {"secretRef": {"name": "views-db"}},
                },
            ),
        )
        local += start_pods(kube, "invoice-list-projector-r1", namespace, tmp_path)

        def caught_up() -> dict[str, Any] | None:
            p = kube.get(API, "Projection", namespace, "invoice-list") or {}
            status = p.get("status") or {}
            done = status.get("lag") == 0 and status.get("progress") == 1.0 and status.get("activeRevision") == 1
            return p if done and condition(p, "Ready").get("status") == "True" else None

        before = wait_for("the projection caught up and Ready", caught_up, 90)["status"]

        # The aggregate breaks (its Kafka is out of reach): the projection says why it is not Ready, and
        # keeps the lag and progress it last read instead of dropping them.
        patch(kube, ESA, namespace, agg, {"spec": {"kafka": {"bootstrapServers": "127.0.0.1:1"}}})
        settled(kube, namespace, agg, "TopicsReady", "False", "KafkaUnavailable", timeout=90)

        def blocked() -> dict[str, Any] | None:
            p = kube.get(API, "Projection", namespace, "invoice-list") or {}
            return p if condition(p, "AggregateReady").get("reason") == "TopicsNotReady" else None

        broken = wait_for("the projection blocked on its aggregate", blocked, 60)
        assert condition(broken, "Ready")["status"] == "False"
        for key in ("lag", "progress", "activeRevision"):
            assert broken["status"].get(key) == before[key], (key, broken["status"])
        # Later passes (the resync runs every few seconds) leave them too.
        time.sleep(3 * operator.resync_seconds)
        again = kube.get(API, "Projection", namespace, "invoice-list")
        assert again is not None and condition(again, "AggregateReady")["reason"] == "TopicsNotReady"
        assert again["status"]["lag"] == 0 and again["status"]["progress"] == 1.0

        # The aggregate heals: the projection is Ready again with fresh figures.
        patch(kube, ESA, namespace, agg, {"spec": {"kafka": {"bootstrapServers": kafka_bootstrap}}})
        wait_for("Ready again", caught_up, 120)
    finally:
        for pod in local:
            pod.stop()
