"""Pods a platform team can place, as the API server stores the workloads the operator declares: the
podTemplate of both kinds, the recommended labels, default requests, and the handlers' default spread."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from foldline_operator.kube import Kube
from tests.e2e.support import ESA, OperatorProcess, create, manifest, wait_for

pytestmark = pytest.mark.e2e

RECOMMENDED = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
}
PLACEMENT: dict[str, Any] = {
    "metadata": {"labels": {"team": "billing"}, "annotations": {"sidecar.istio.io/inject": "false"}},
    "spec": {
        "nodeSelector": {"pool": "stateful"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "kafka", "effect": "NoSchedule"}],
        "priorityClassName": "business-critical",
        "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
        "volumes": [{"name": "tuning", "configMap": {"name": "tuning"}}],
        "volumeMounts": [{"name": "tuning", "mountPath": "/etc/tuning", "readOnly": True}],
    },
}
SPREAD = [
    {
        "maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"team": "views"}},
    }
]
NODE_AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]
        }
    }
}


def stored(kube: Kube, kind: str, namespace: str, name: str) -> dict[str, Any]:
    return wait_for(f"{kind} {name}", lambda: kube.get("apps/v1", kind, namespace, name), 60)


def test_pod_templates_reach_the_stored_workloads(
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
        "image": "registry.example.com/shop:1.4.2",
        "partitions": 2,
        "replicationFactor": 1,
        "kafka": {"bootstrapServers": kafka_bootstrap},
        "podTemplate": PLACEMENT,
    }
    create(kube, manifest(ESA, agg, namespace, spec))
    template = stored(kube, "StatefulSet", namespace, f"{agg}-command-handler")["spec"]["template"]
    meta, pod = template["metadata"], template["spec"]
    [container] = pod["containers"]
    assert set(meta["labels"]) >= RECOMMENDED and meta["labels"]["team"] == "billing"
    assert meta["labels"]["app.kubernetes.io/version"] == "1.4.2"
    assert meta["labels"]["app.kubernetes.io/component"] == "command-handler"
    assert meta["annotations"]["sidecar.istio.io/inject"] == "false"
    assert pod["nodeSelector"] == {"pool": "stateful"} and pod["priorityClassName"] == "business-critical"
    assert pod["tolerations"] == PLACEMENT["spec"]["tolerations"]
    assert {"name": "tuning", "configMap": {"name": "tuning", "defaultMode": 420}} in pod["volumes"]
    assert {"name": "tuning", "mountPath": "/etc/tuning", "readOnly": True} in container["volumeMounts"]
    env = {e["name"]: e for e in container["env"]}
    assert env["DB_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "db", "key": "password"}}
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}  # default requests
    # No affinity or spread in the podTemplate: the handlers' defaults (one per node, spread over zones).
    [preferred] = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert [s["topologyKey"] for s in pod["topologySpreadConstraints"]] == ["topology.kubernetes.io/zone"]

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
        "aggregateRef": {"name": agg},
        "projector": "tests.e2e.views:invoice_list_r1",
        "revision": 1,
        "database": {"secretRef": {"name": "views-db"}},
        "podTemplate": {
            "metadata": {"labels": {"team": "views"}},
            "spec": {"affinity": NODE_AFFINITY, "topologySpreadConstraints": SPREAD, "nodeSelector": {"pool": "web"}},
        },
    }
    create(kube, manifest("Projection", "invoice-list", namespace, projection))
    template = stored(kube, "Deployment", namespace, "invoice-list-projector-r1")["spec"]["template"]
    meta, pod = template["metadata"], template["spec"]
    assert RECOMMENDED - {"app.kubernetes.io/version"} <= set(meta["labels"]) and meta["labels"]["team"] == "views"
    assert meta["labels"]["app.kubernetes.io/component"] == "projector"
    assert pod["affinity"] == NODE_AFFINITY and pod["topologySpreadConstraints"] == SPREAD
    assert pod["nodeSelector"] == {"pool": "web"}
    assert set(pod["containers"][0]["resources"]["requests"]) == {"cpu", "memory"}
