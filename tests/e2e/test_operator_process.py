"""The operator as a process: SIGKILLed half-way it converges, once restarted, to the state an
uninterrupted run reaches; a second replica (lower peering priority) stays paused until the first goes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from foldline.topics import TopicNames
from foldline_operator.kube import Kube
from tests.e2e.support import API, ESA, OperatorProcess, condition, create, http_ok, manifest, patch, wait_for
from tests.e2e.test_aggregate import topic_state

pytestmark = pytest.mark.e2e

OWNED = [
    ("apps/v1", "StatefulSet", "command-handler"),
    ("v1", "Service", "command-handler"),
    ("policy/v1", "PodDisruptionBudget", "command-handler"),
    ("apps/v1", "Deployment", "gateway"),
    ("v1", "Service", "gateway"),
    ("policy/v1", "PodDisruptionBudget", "gateway"),
]


def spec_for(name: str, bootstrap: str) -> dict[str, Any]:
    return {
        "aggregate": f"tests.named_invoices:{name.replace('-', '_')}",
        "image": "foldline:dev",
        "partitions": 3,
        "replicationFactor": 1,
        "kafka": {"bootstrapServers": bootstrap},
        "retention": {"commands": "3d"},
    }


CHANGE = {"spec": {"handlers": {"replicas": 2}, "gateway": {"enabled": True, "replicas": 2}}}


def end_state(kube: Kube, admin: AdminClient, namespace: str, name: str) -> dict[str, Any]:
    """What the operator is responsible for, with the resource's own name and uids taken out."""
    obj = kube.get(API, ESA, namespace, name)
    assert obj is not None
    state: dict[str, Any] = {
        "conditions": sorted((c["type"], c["status"], c["reason"]) for c in obj["status"]["conditions"]),
        "status": {k: obj["status"].get(k) for k in ("partitions", "desiredReplicas", "paused")},
        "topics": {t.split(".", 1)[1]: topic_state(admin, t) for t in TopicNames(name).all()},
    }
    for api_version, kind, suffix in OWNED:
        found = kube.get(api_version, kind, namespace, f"{name}-{suffix}")
        assert found is not None, f"{kind} {name}-{suffix} missing"
        owner = found["metadata"]["ownerReferences"]
        assert [(o["kind"], o["name"], o["uid"]) for o in owner] == [(ESA, name, obj["metadata"]["uid"])]
        spec = {k: v for k, v in found["spec"].items() if k not in ("clusterIP", "clusterIPs")}
        state[f"{kind}/{suffix}"] = {"labels": found["metadata"]["labels"], "spec": spec}
    text = json.dumps(state, sort_keys=True)
    return json.loads(re.sub(re.escape(name) + "|" + re.escape(name.replace("-", "_")), "NAME", text))


def converged(kube: Kube, namespace: str, name: str) -> bool:
    obj = kube.get(API, ESA, namespace, name) or {}
    status = obj.get("status") or {}
    return (
        status.get("observedGeneration") == obj["metadata"]["generation"]
        and condition(obj, "TopicsReady").get("status") == "True"
        and kube.get("policy/v1", "PodDisruptionBudget", namespace, f"{name}-gateway") is not None
        and (kube.get("apps/v1", "StatefulSet", namespace, f"{name}-command-handler") or {})
        .get("spec", {})
        .get("replicas")
        == 2
    )


def test_sigkilled_operator_converges_to_the_same_end_state(
    kube: Kube,
    operator: OperatorProcess,
    namespace: str,
    kafka_bootstrap: str,
    kafka_admin: AdminClient,
    aggregate_name: Callable[[], str],
) -> None:
    # Reference: one resource reconciled by an operator that is never interrupted.
    reference = aggregate_name()
    create(kube, manifest(ESA, reference, namespace, spec_for(reference, kafka_bootstrap)))
    wait_for(
        "reference deployed", lambda: kube.get("apps/v1", "StatefulSet", namespace, f"{reference}-command-handler")
    )
    patch(kube, ESA, namespace, reference, CHANGE)
    wait_for("reference converged", lambda: converged(kube, namespace, reference), 60)

    # The same declarations, with the operator SIGKILLed twice on the way.
    name = aggregate_name()
    create(kube, manifest(ESA, name, namespace, spec_for(name, kafka_bootstrap)))
    wait_for("its first topic", lambda: topic_state(kafka_admin, TopicNames(name).commands), 30, interval=0.02)
    operator.kill()  # in the middle: topics being created, no workloads yet
    patch(kube, ESA, namespace, name, CHANGE)  # changed while no operator runs
    operator.start()
    wait_for(
        "its gateway Deployment",
        lambda: kube.get("apps/v1", "Deployment", namespace, f"{name}-gateway"),
        30,
        interval=0.02,
    )
    operator.kill()  # in the middle of applying the workloads
    operator.start()
    wait_for("converged after the restarts", lambda: converged(kube, namespace, name), 60)

    assert end_state(kube, kafka_admin, namespace, name) == end_state(kube, kafka_admin, namespace, reference)


def test_a_second_replica_with_lower_priority_stays_paused(
    kube: Kube,
    operator: OperatorProcess,
    namespace: str,
    kafka_bootstrap: str,
    aggregate_name: Callable[[], str],
    tmp_path: Path,
) -> None:
    standby = OperatorProcess(operator.kubeconfig, tmp_path, operator.peering, priority=0)
    standby.start(priority=1, standby=True)
    try:

        def peers() -> dict[str, Any]:
            found = kube.get("kopf.dev/v1", "ClusterKopfPeering", "", operator.peering) or {}
            return {k: v for k, v in (found.get("status") or {}).items() if v}

        wait_for(
            "both replicas in the peering object",
            lambda: {1, operator.priority} <= {p["priority"] for p in peers().values()},
            30,
        )
        name = aggregate_name()
        create(kube, manifest(ESA, name, namespace, spec_for(name, kafka_bootstrap)))
        wait_for(
            "deployed by the active replica",
            lambda: kube.get("apps/v1", "StatefulSet", namespace, f"{name}-command-handler"),
        )
        wait_for("a few resyncs", lambda: condition(kube.get(API, ESA, namespace, name), "TopicsReady"), 30)
        assert reconciles(operator.metrics()) > 0
        assert reconciles(standby.metrics()) == 0  # paused: it never acted (its series exist, at 0)
        assert "Resuming operations" not in standby.log_tail(200)
        # Readiness tells them apart: the paused standby is alive, not ready.
        assert http_ok(operator.port, "/readyz") and http_ok(standby.port, "/healthz")
        assert not http_ok(standby.port, "/readyz")
        assert http_ok(standby.port, "/started")  # the kubelet's readiness probe: rollouts do not stall
        # The active replica stops (and leaves the peering): the standby takes over, and becomes ready.
        operator.stop()
        wait_for("the standby acting", lambda: "foldline_operator_reconciles_total{" in standby.metrics(), 30)
        wait_for("the standby ready", lambda: http_ok(standby.port, "/readyz"), 30)
        operator.start()  # a higher priority again: the standby pauses once more
        wait_for("the standby not ready again", lambda: not http_ok(standby.port, "/readyz"), 30)
    finally:
        standby.stop()


def reconciles(metrics_text: str) -> float:
    """The sum of a process's ``foldline_operator_reconciles_total`` samples."""
    return sum(float(v) for v in re.findall(r"^foldline_operator_reconciles_total\{[^}]*\} (\S+)$", metrics_text, re.M))
