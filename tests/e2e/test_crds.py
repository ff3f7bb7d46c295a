"""The CRDs install on a real API server, default what they promise, and reject what they must."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from foldline_operator.kube import Kube, KubeError
from tests.e2e.support import ESA, REPO, create, manifest, patch, plural_of

pytestmark = pytest.mark.e2e


#: The operator of the session sees these too: paused, it leaves them (and the unreachable broker) alone.
PAUSED = {"annotations": {"foldline.io/paused": "true"}}


@pytest.fixture(autouse=True)
def _installed(crds: list[dict[str, Any]]) -> None:
    """Every test here needs the CRDs, whichever runs first (``-k`` picks any)."""


def esa_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "aggregate": "foldline.examples.invoices:Invoices",
        "image": "foldline:dev",
        "partitions": 3,
        "kafka": {"bootstrapServers": "127.0.0.1:1"},
    }
    spec.update(overrides)
    return spec


def rejected(kube: Kube, obj: dict[str, Any]) -> str:
    with pytest.raises(KubeError) as info:
        create(kube, obj)
    assert info.value.status == 422, info.value
    return str(info.value)


def test_crds_are_established_with_short_names_and_columns(kube: Kube, crds: list[dict[str, Any]]) -> None:
    names = {c["metadata"]["name"] for c in crds}
    assert {
        "eventsourcedaggregates.foldline.io",
        "projections.foldline.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    } <= names
    served = kube.request("GET", "/apis/foldline.io/v1alpha1")
    assert served is not None
    resources = {r["name"]: r for r in served["resources"]}
    assert resources["eventsourcedaggregates"]["shortNames"] == ["esa"]
    assert resources["projections"]["shortNames"] == ["proj"]
    assert resources["policies"]["shortNames"] == ["pol"]
    assert "policies/status" in resources
    assert {"eventsourcedaggregates/status", "eventsourcedaggregates/scale", "projections/status"} <= set(resources)
    crd = kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "eventsourcedaggregates.foldline.io")
    assert crd is not None
    columns = {c["name"]: c["jsonPath"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert list(columns) == ["Ready", "Partitions", "Replicas", "Lag", "Reason", "Age"]
    assert columns["Partitions"] == ".status.partitions"


def test_defaults_are_applied(kube: Kube, namespace: str) -> None:
    created = create(kube, manifest(ESA, "defaults", namespace, esa_spec(), **PAUSED))
    spec = created["spec"]
    assert spec["deletionPolicy"] == "Retain"
    assert spec["allowPartitionGrowth"] is False
    assert spec["replicationFactor"] == 3
    assert spec["handlers"]["replicas"] == 1
    assert spec["handlers"]["storage"] == {"size": "1Gi", "storeKind": "rocksdb", "volume": "persistentVolumeClaim"}
    assert spec["suspend"] is False
    assert spec["retention"] == {"commands": "7d", "results": "1h", "deadLetters": "30d"}
    assert spec["gateway"] == {"enabled": False, "replicas": 1}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"handlers": {"replicas": 4}}, "spec.handlers.replicas must not exceed spec.partitions"),
        ({"handlers": {"autoscaling": {"maxReplicas": 5}}}, "autoscaling.maxReplicas must not exceed spec.partitions"),
        (
            {"handlers": {"autoscaling": {"minReplicas": 3, "maxReplicas": 2}}},
            "autoscaling.minReplicas must not exceed maxReplicas",
        ),
        ({"deletionPolicy": "Nope"}, 'supported values: "Retain", "Delete"'),
        ({"partitions": 0}, "should be greater than or equal to 1"),
        ({"aggregate": "no-colon"}, "spec.aggregate"),
        ({"retention": {"commands": "7 days"}}, "spec.retention.commands"),
        ({"handlers": {"storage": {"storeKind": "redis"}}}, 'supported values: "rocksdb", "lmdb", "sqlite"'),
        ({"handlers": {"storage": {"volume": "hostPath"}}}, 'supported values: "persistentVolumeClaim", "emptyDir"'),
        # podTemplate: wrong types are refused by the schema, not found later in a failing pod.
        ({"podTemplate": {"spec": {"nodeSelector": {"pool": 1}}}}, "spec.podTemplate.spec.nodeSelector.pool"),
        ({"podTemplate": {"spec": {"tolerations": "all"}}}, "spec.podTemplate.spec.tolerations"),
        ({"podTemplate": {"spec": {"priorityClassName": 5}}}, "spec.podTemplate.spec.priorityClassName"),
        ({"podTemplate": {"metadata": {"labels": {"team": ["a"]}}}}, "spec.podTemplate.metadata.labels.team"),
        (
            {"podTemplate": {"spec": {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone"}]}}},
            "whenUnsatisfiable: Required value",
        ),
        (
            {"podTemplate": {"spec": {"tolerations": [{"key": "k", "effect": "Sometimes"}]}}},
            'supported values: "", "NoSchedule", "PreferNoSchedule", "NoExecute"',
        ),
        ({"podTemplate": {"spec": {"volumes": [{"name": "state", "emptyDir": {}}]}}}, "are the operator's own"),
        (
            {
                "podTemplate": {
                    "spec": {
                        "env": [
                            {
                                "name": "X",
                                "valueFrom": {
                                    "secretKeyRef": {"name": "s", "key": "k"},
                                    "fieldRef": {"fieldPath": "metadata.name"},
                                },
                            }
                        ]
                    }
                }
            },
            "valueFrom takes exactly one source",
        ),
        ({"env": [{"name": "X", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]}, "not both"),
    ],
)
def test_invalid_aggregates_are_rejected_with_the_schema_message(
    kube: Kube, namespace: str, overrides: dict[str, Any], message: str
) -> None:
    error = rejected(kube, manifest(ESA, "bad", namespace, esa_spec(**overrides), **PAUSED))
    assert message in error


POD_TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"team": "billing"}, "annotations": {"sidecar.istio.io/inject": "false"}},
    "spec": {
        "nodeSelector": {"pool": "stateful"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "kafka", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]
                }
            }
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "command-handler"}},
            }
        ],
        "priorityClassName": "business-critical",
        "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
        "volumes": [{"name": "tuning", "configMap": {"name": "tuning", "items": [{"key": "a", "path": "a"}]}}],
        "volumeMounts": [{"name": "tuning", "mountPath": "/etc/tuning", "readOnly": True}],
    },
}


def test_a_pod_template_is_accepted_as_written(kube: Kube, namespace: str) -> None:
    """Nested pod API fields the schema does not spell out (affinity terms, volume sources) are kept."""
    created = create(kube, manifest(ESA, "placed", namespace, esa_spec(podTemplate=POD_TEMPLATE), **PAUSED))
    assert created["spec"]["podTemplate"] == POD_TEMPLATE
    projection = {
        "aggregateRef": {"name": "placed"},
        "projector": "foldline.examples.invoices.views:InvoiceList",
        "database": {"secretRef": {"name": "db"}},
        "podTemplate": {"spec": {"nodeSelector": {"pool": "cheap"}}},
        "suspend": True,
    }
    accepted = create(kube, manifest("Projection", "placed", namespace, projection, **PAUSED))
    assert accepted["spec"]["podTemplate"] == projection["podTemplate"] and accepted["spec"]["suspend"] is True


def test_partitions_never_shrink_at_admission(kube: Kube, namespace: str) -> None:
    create(kube, manifest(ESA, "grows", namespace, esa_spec(partitions=3), **PAUSED))
    with pytest.raises(KubeError, match=re.escape("spec.partitions can never shrink")) as info:
        patch(kube, ESA, namespace, "grows", {"spec": {"partitions": 2}})
    assert info.value.status == 422
    grown = patch(kube, ESA, namespace, "grows", {"spec": {"partitions": 4}})  # growth is the operator's call
    assert grown["spec"]["partitions"] == 4


def test_long_names_and_immutable_fields(kube: Kube, namespace: str) -> None:
    error = rejected(kube, manifest(ESA, "a" * 41, namespace, esa_spec(), **PAUSED))
    assert "metadata.name must have at most 40 characters" in error
    create(kube, manifest(ESA, "named", namespace, esa_spec(aggregateName="named"), **PAUSED))
    with pytest.raises(KubeError, match=re.escape("spec.aggregateName is immutable")):
        patch(kube, ESA, namespace, "named", {"spec": {"aggregateName": "renamed"}})
    with pytest.raises(KubeError, match=re.escape("spec.handlers.replicas must not exceed spec.partitions")):
        kube.request(
            "PATCH",
            f"/apis/foldline.io/v1alpha1/namespaces/{namespace}/eventsourcedaggregates/named/scale",
            body={"spec": {"replicas": 9}},
            content_type="application/merge-patch+json",
        )


def test_projection_rules(kube: Kube, namespace: str) -> None:
    spec = {
        "aggregateRef": {"name": "inv"},
        "projector": "foldline.examples.invoices.views:InvoiceList",
        "database": {"secretRef": {"name": "db"}},
    }
    created = create(kube, manifest("Projection", "list", namespace, spec, **PAUSED))
    assert created["spec"]["revision"] == 1
    assert created["spec"]["source"] == "snapshots"
    assert created["spec"]["database"]["secretRef"]["key"] == "url"
    with pytest.raises(KubeError, match=re.escape("spec.revision can only grow")):
        patch(kube, "Projection", namespace, "list", {"spec": {"revision": 2}})
        patch(kube, "Projection", namespace, "list", {"spec": {"revision": 1}})
    with pytest.raises(KubeError, match=re.escape("changing spec.source needs a rebuild")):
        patch(kube, "Projection", namespace, "list", {"spec": {"source": "events"}})
    with pytest.raises(KubeError, match=re.escape("spec.aggregateRef is immutable")):
        patch(kube, "Projection", namespace, "list", {"spec": {"aggregateRef": {"name": "other"}}})
    error = rejected(kube, manifest("Projection", "bad", namespace, {**spec, "source": "changelog"}, **PAUSED))
    assert 'supported values: "snapshots", "events"' in error


def test_the_example_manifests_are_accepted(kube: Kube, namespace: str) -> None:
    """manifests/examples pass the API server's validation (server-side dry run: nothing is stored)."""
    for doc in yaml.safe_load_all((REPO / "manifests" / "examples" / "invoices.yaml").read_text()):
        plural = plural_of(doc["kind"])
        base = "/api/v1" if doc["apiVersion"] == "v1" else f"/apis/{doc['apiVersion']}"
        accepted = kube.request("POST", f"{base}/namespaces/{namespace}/{plural}", body=doc, query={"dryRun": "All"})
        assert accepted is not None and accepted["metadata"]["name"] == doc["metadata"]["name"]


def test_policy_defaults_and_refusals(kube: Kube, namespace: str) -> None:
    spec = {"policy": "foldline.examples.invoices:ChargeOnSend", "sources": [{"name": "invoices"}]}
    created = create(
        kube, manifest("Policy", "charges", namespace, {**spec, "policyName": "invoice-charges"}, **PAUSED)
    )
    assert (created["spec"]["replicas"], created["spec"]["storeKind"], created["spec"]["suspend"]) == (
        1,
        "rocksdb",
        False,
    )
    assert created["spec"]["retention"] == {"deadLetters": "30d"}
    with pytest.raises(KubeError, match=re.escape("spec.policyName is immutable")):
        patch(kube, "Policy", namespace, "charges", {"spec": {"policyName": "other"}})
    assert "should have at least 1 items" in rejected(
        kube, manifest("Policy", "none", namespace, {**spec, "sources": []})
    )
    assert "spec.policy" in rejected(kube, manifest("Policy", "bad", namespace, {**spec, "policy": "not a path"}))
