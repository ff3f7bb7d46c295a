"""Command handlers as a StatefulSet against the real API server and controllers: a rollout keeps the claim
and the instance id (the restarted pod restores nothing), a storage change replaces the StatefulSet without
touching its pods, a Deployment of an older operator is replaced, ``spec.suspend`` scales to zero and
back, and the status tells Kafka's refusals, a replication factor it keeps, and its absence apart."""

from __future__ import annotations

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
    dump,
    events_of,
    http_ok,
    manifest,
    mark_ready,
    patch,
    run_pod_locally,
    start_pods,
    wait_for,
)
from tests.e2e.test_aggregate import esa, handler_replicas, settled, statefulset
from tests.kafka_support import command, send, wait_for_results

pytestmark = pytest.mark.e2e

CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}
LINE = {"line_id": "l1", "description": "work", "quantity": 1, "unit_price": "1.00"}


def spec_for(name: str, bootstrap: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "aggregate": f"tests.named_invoices:{name.replace('-', '_')}",
        "image": "foldline:dev",
        "partitions": 2,
        "replicationFactor": 1,
        "kafka": {"bootstrapServers": bootstrap},
    }
    spec.update(overrides)
    return spec


def pod(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    found = kube.get("v1", "Pod", namespace, name)
    return found if found and not found["metadata"].get("deletionTimestamp") else None


def test_a_rollout_keeps_the_claim_and_the_instance_id(
    kube: Kube,
    operator: OperatorProcess,
    namespace: str,
    kafka_bootstrap: str,
    aggregate_name: Callable[[], str],
    tmp_path: Path,
) -> None:
    name = aggregate_name()
    create(kube, manifest(ESA, name, namespace, spec_for(name, kafka_bootstrap)))
    handler = f"{name}-command-handler"
    claim = wait_for("the claim", lambda: kube.get("v1", "PersistentVolumeClaim", namespace, f"state-{handler}-0"))
    local: list[LocalPod] = start_pods(kube, handler, namespace, tmp_path)
    try:
        first = local[0]
        send(
            kafka_bootstrap,
            TopicNames(name).commands,
            [command(f"inv-{i}", "CreateInvoice", CREATE) for i in range(10)],
        )
        wait_for_results(kafka_bootstrap, name, 10, timeout=60)
        old_uid = pod(kube, namespace, f"{handler}-0")["metadata"]["uid"]  # type: ignore[index]

        # A template change: the StatefulSet controller replaces pod 0 by a pod of the same name.
        patch(kube, ESA, namespace, name, {"spec": {"env": [{"name": "FOLDLINE_COMMIT_INTERVAL_MS", "value": "50"}]}})
        renewed = wait_for(
            "pod 0 recreated",
            lambda: (p := pod(kube, namespace, f"{handler}-0")) and p["metadata"]["uid"] != old_uid and p,
            60,
        )
        first.stop()  # what the kubelet does to the old pod's container
        assert {"name": "FOLDLINE_COMMIT_INTERVAL_MS", "value": "50"} in renewed["spec"]["containers"][0]["env"]
        again = run_pod_locally(kube, renewed, tmp_path)  # the same state directory: the same claim
        local.append(again)
        assert again.env["FOLDLINE_INSTANCE_ID"] == first.env["FOLDLINE_INSTANCE_ID"] == f"{handler}-0"
        assert again.env["FOLDLINE_STATE_DIR"] == first.env["FOLDLINE_STATE_DIR"]
        wait_for("the new pod answers", lambda: again.proc.poll() is None and _ready(again), 90)
        mark_ready(kube, renewed)

        kept = kube.get("v1", "PersistentVolumeClaim", namespace, f"state-{handler}-0")
        assert kept is not None and kept["metadata"]["uid"] == claim["metadata"]["uid"]
        more = [command(f"inv-{i}", "AddLineItem", LINE) for i in range(10)]
        send(kafka_bootstrap, TopicNames(name).commands, more)
        results = wait_for_results(kafka_bootstrap, name, 20, timeout=60)
        assert sorted(r.version for r in results if r.command_id in {c.command_id for c in more}) == [2] * 10
        # Its stores were where it left them: only the (empty) tail was restored.
        assert '"store restored"' not in again.log.read_text()
    finally:
        for p in local:
            p.stop()


def _ready(local: LocalPod) -> bool:
    return http_ok(local.port, "/readyz")


def test_a_storage_change_replaces_the_statefulset_and_keeps_its_pods(
    kube: Kube, operator: OperatorProcess, namespace: str, kafka_bootstrap: str, aggregate_name: Callable[[], str]
) -> None:
    name = aggregate_name()
    create(kube, manifest(ESA, name, namespace, spec_for(name, kafka_bootstrap)))
    handler = f"{name}-command-handler"
    before = statefulset(kube, namespace, handler)
    running = wait_for("pod 0", lambda: pod(kube, namespace, f"{handler}-0"))
    # Claim templates cannot change in place: the operator orphans the pods and recreates the StatefulSet.
    patch(kube, ESA, namespace, name, {"spec": {"handlers": {"storage": {"size": "5Gi"}}}})

    def replaced() -> dict[str, Any] | None:
        found = kube.get("apps/v1", "StatefulSet", namespace, handler)
        return found if found and found["metadata"]["uid"] != before["metadata"]["uid"] else None

    try:
        after = wait_for("a new StatefulSet", replaced, 90)
    except AssertionError:
        raise AssertionError(
            f"{dump(esa(kube, namespace, name)['status'])}\n{events_of(kube, namespace, name)}"
        ) from None
    assert after["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "5Gi"
    wait_for(
        "Event StatefulSetReplaced", lambda: "StatefulSetReplaced" in {r for r, _ in events_of(kube, namespace, name)}
    )

    def adopted() -> dict[str, Any] | None:
        found = pod(kube, namespace, f"{handler}-0")
        owners = (found or {}).get("metadata", {}).get("ownerReferences") or []
        return found if [o["uid"] for o in owners] == [after["metadata"]["uid"]] else None

    kept = wait_for("pod 0 adopted by the new StatefulSet", adopted, 60)
    assert kept["metadata"]["uid"] == running["metadata"]["uid"]  # the pod template did not change: not restarted


def test_a_handler_deployment_of_an_older_operator_is_replaced(
    kube: Kube, operator: OperatorProcess, namespace: str, kafka_bootstrap: str, aggregate_name: Callable[[], str]
) -> None:
    name = aggregate_name()
    paused = {"annotations": {"foldline.io/paused": "true"}}
    owner = create(kube, manifest(ESA, name, namespace, spec_for(name, kafka_bootstrap), **paused))
    match = {
        "app.kubernetes.io/name": "foldline",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "command-handler",
    }
    legacy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"{name}-command-handler",
            "namespace": namespace,
            "labels": match,
            "ownerReferences": [
                {
                    "apiVersion": API,
                    "kind": ESA,
                    "name": name,
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": match},
            "template": {
                "metadata": {"labels": match},
                "spec": {"containers": [{"name": "command-handler", "image": "foldline:old"}]},
            },
        },
    }
    create(kube, legacy)
    patch(kube, ESA, namespace, name, {"metadata": {"annotations": {"foldline.io/paused": None}}})
    statefulset(kube, namespace, f"{name}-command-handler")
    wait_for(
        "the Deployment gone",
        lambda: kube.get("apps/v1", "Deployment", namespace, f"{name}-command-handler") is None,
        60,
    )
    wait_for(
        "Event DeploymentReplaced", lambda: "DeploymentReplaced" in {r for r, _ in events_of(kube, namespace, name)}
    )


def test_suspend_scales_handlers_and_projectors_to_zero_and_back(
    kube: Kube,
    operator: OperatorProcess,
    namespace: str,
    kafka_bootstrap: str,
    aggregate_name: Callable[[], str],
    tmp_path: Path,
) -> None:
    name = aggregate_name()
    create(kube, manifest(ESA, name, namespace, spec_for(name, kafka_bootstrap, handlers={"replicas": 2})))
    wait_for("2 handlers", lambda: handler_replicas(kube, namespace, name) == 2)
    create(
        kube,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "views-db", "namespace": namespace},
            "stringData": {"url": f"sqlite:///{tmp_path / 'views.db'}"},
        },
    )
    projection = {
        "aggregateRef": {"name": name},
        "projector": "tests.e2e.views:invoice_list_r1",
        "database": {"secretRef": {"name": "views-db"}},
    }
    create(kube, manifest("Projection", "list", namespace, projection))
    projector = "list-projector-r1"

    def projector_replicas() -> int | None:
        found = kube.get("apps/v1", "Deployment", namespace, projector)
        return None if found is None else int(found["spec"]["replicas"])

    wait_for("1 projector", lambda: projector_replicas() == 1)

    patch(kube, ESA, namespace, name, {"spec": {"suspend": True}})
    patch(kube, "Projection", namespace, "list", {"spec": {"suspend": True}})
    wait_for("no handlers", lambda: handler_replicas(kube, namespace, name) == 0)
    wait_for("no projector", lambda: projector_replicas() == 0)
    suspended = settled(kube, namespace, name, "HandlersReady", "False", "Suspended")
    assert suspended["status"]["suspended"] is True and suspended["status"]["desiredReplicas"] == 2
    assert condition(suspended, "Ready")["reason"] == "Suspended"
    assert condition(suspended, "TopicsReady")["status"] == "True"  # topics are still looked after
    proj = wait_for(
        "projection suspended",
        lambda: (
            (p := kube.get(API, "Projection", namespace, "list"))
            and condition(p, "ProjectorReady").get("reason") == "Suspended"
            and p
        ),
    )
    assert proj["status"]["suspended"] is True and condition(proj, "Ready")["reason"] == "Suspended"
    # The claims stay while suspended (whenScaled: Retain): the pods come back to their stores.
    assert kube.get("v1", "PersistentVolumeClaim", namespace, f"state-{name}-command-handler-1") is not None

    patch(kube, ESA, namespace, name, {"spec": {"suspend": False}})
    patch(kube, "Projection", namespace, "list", {"spec": {"suspend": False}})
    wait_for("2 handlers again", lambda: handler_replicas(kube, namespace, name) == 2)
    wait_for("1 projector again", lambda: projector_replicas() == 1)
    resumed = wait_for("resumed", lambda: esa(kube, namespace, name)["status"].get("suspended") is False)
    assert resumed is True
    assert condition(esa(kube, namespace, name), "HandlersReady")["reason"] != "Suspended"


def test_kafka_refusals_and_absence_are_told_apart(
    kube: Kube, operator: OperatorProcess, namespace: str, kafka_bootstrap: str, aggregate_name: Callable[[], str]
) -> None:
    # One broker cannot hold three replicas: the broker refuses, Kafka is not "unavailable".
    wide = aggregate_name()
    create(kube, manifest(ESA, wide, namespace, spec_for(wide, kafka_bootstrap, replicationFactor=3)))
    refused = settled(kube, namespace, wide, "TopicsReady", "False", "InvalidReplicationFactor")
    assert "replication factor" in condition(refused, "TopicsReady")["message"].lower()

    # A replication factor Kafka keeps for existing topics is reported, not silently ignored.
    name = aggregate_name()
    create(kube, manifest(ESA, name, namespace, spec_for(name, kafka_bootstrap)))
    wait_for("lag known", lambda: (esa(kube, namespace, name).get("status") or {}).get("lag") == 0)
    patch(kube, ESA, namespace, name, {"spec": {"replicationFactor": 2}})
    differs = settled(kube, namespace, name, "TopicsReady", "True", "ReplicationFactorDiffers")
    assert f"{name}.commands: 1" in condition(differs, "TopicsReady")["message"]
    wait_for("a Warning Event", lambda: "ReplicationFactorDiffers" in {r for r, _ in events_of(kube, namespace, name)})
    patch(kube, ESA, namespace, name, {"spec": {"replicationFactor": 1}})
    settled(kube, namespace, name, "TopicsReady", "True", "Verified")

    # A lag that was known is removed, not left at its last value, while Kafka is out of reach.
    patch(kube, ESA, namespace, name, {"spec": {"kafka": {"bootstrapServers": "127.0.0.1:1"}}})
    away = settled(kube, namespace, name, "TopicsReady", "False", "KafkaUnavailable", timeout=90)
    assert "lag" not in away["status"]
    patch(kube, ESA, namespace, name, {"spec": {"kafka": {"bootstrapServers": kafka_bootstrap}}})
    wait_for("lag known again", lambda: (esa(kube, namespace, name).get("status") or {}).get("lag") == 0, 90)
