"""The CRDs install on a real API server, default what they promise, and reject what they must."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from foldline_operator.kube import Kube, KubeError
from tests.e2e.support import ESA, REPO, create, manifest, patch

pytestmark = pytest.mark.e2e


#: The operator of the session sees these too: paused, it leaves them (and the unreachable broker) alone.
PAUSED = {"annotations": {"foldline.io/paused": "true"}}


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
    assert {"eventsourcedaggregates/status", "eventsourcedaggregates/scale", "projections/status"} <= set(resources)
    crd = kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "eventsourcedaggregates.foldline.io")
    assert crd is not None
    columns = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Ready", "Partitions", "Replicas", "Lag", "Reason", "Age"]


def test_defaults_are_applied(kube: Kube, namespace: str) -> None:
    created = create(kube, manifest(ESA, "defaults", namespace, esa_spec(), **PAUSED))
    spec = created["spec"]
    assert spec["deletionPolicy"] == "Retain"
    assert spec["allowPartitionGrowth"] is False
    assert spec["replicationFactor"] == 3
    assert spec["handlers"]["replicas"] == 1
    assert spec["handlers"]["storage"] == {"size": "1Gi", "storeKind": "lmdb"}
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
        ({"handlers": {"storage": {"storeKind": "redis"}}}, 'supported values: "lmdb", "sqlite", "rocksdb"'),
    ],
)
def test_invalid_aggregates_are_rejected_with_the_schema_message(
    kube: Kube, namespace: str, overrides: dict[str, Any], message: str
) -> None:
    error = rejected(kube, manifest(ESA, "bad", namespace, esa_spec(**overrides), **PAUSED))
    assert message in error


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
        plural = doc["kind"].lower() + "s"
        base = "/api/v1" if doc["apiVersion"] == "v1" else f"/apis/{doc['apiVersion']}"
        accepted = kube.request("POST", f"{base}/namespaces/{namespace}/{plural}", body=doc, query={"dryRun": "All"})
        assert accepted is not None and accepted["metadata"]["name"] == doc["metadata"]["name"]
