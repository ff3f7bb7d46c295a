"""Least privilege against the real API server (--authorization-mode=RBAC): the operator works with exactly
the chart's rules (templates/rbac.yaml rendered by helm) and is refused anything else; it connects to no
projection database inside its own pod.

Namespaced mode: a second operator (higher peering priority, so the session's one pauses) serves one
namespace under the Roles of ``operator.watchNamespaces``. Cluster-wide mode: the session's operator reads
no Secret of a namespace whose owner has not bound the "<release>-secrets" ClusterRole.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import config as k8s_config

from foldline_operator.kube import Kube, KubeError, SecretForbidden
from tests.e2e.chart import install_identity, render_rbac
from tests.e2e.conftest import OPERATOR_NAMESPACE, PEERING, secrets_binding
from tests.e2e.support import API, ESA, OperatorProcess, condition, create, manifest, wait_for

pytestmark = pytest.mark.e2e


def make_namespace(kube: Kube, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    create(kube, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def secret(kube: Kube, namespace: str, name: str, data: dict[str, str]) -> None:
    create(
        kube,
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace}, "stringData": data},
    )


def aggregate(name: str, namespace: str, bootstrap: str, **kafka: Any) -> dict[str, Any]:
    spec = {
        "aggregate": f"tests.named_invoices:{name.replace('-', '_')}",
        "image": "foldline:dev",
        "partitions": 1,
        "replicationFactor": 1,
        "kafka": {"bootstrapServers": bootstrap, **kafka},
    }
    return manifest(ESA, name, namespace, spec)


def projection(name: str, namespace: str, aggregate_ref: str, secret_name: str) -> dict[str, Any]:
    spec = {
        "aggregateRef": {"name": aggregate_ref},
        "projector": "tests.e2e.views:invoice_list_r1",
        "revision": 1,
        "database": {"secretRef": {"name": secret_name}},
    }
    return manifest("Projection", name, namespace, spec)


def settled(kube: Kube, kind: str, namespace: str, name: str, type_: str, status: str, reason: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def probe() -> dict[str, Any] | None:
        seen["status"] = (kube.get(API, kind, namespace, name) or {}).get("status")
        c = condition({"status": seen["status"]}, type_)
        return seen if (c.get("status"), c.get("reason")) == (status, reason) else None

    try:
        return wait_for(f"{kind} {name}: {type_}={status} {reason}", probe, 90)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nlast status: {seen.get('status')}") from None


def forbidden(call: Callable[[], object]) -> str:
    """The API server's refusal message; fails when the call is allowed."""
    with pytest.raises(KubeError) as refused:
        call()
    assert refused.value.status == 403, refused.value
    return str(refused.value)


def test_cluster_wide_mode_reads_secrets_only_where_a_namespace_grants_them(
    kube: Kube, operator: OperatorProcess, kafka_bootstrap: str, aggregate_name: Callable[[], str]
) -> None:
    as_operator = Kube(k8s_config.new_client_from_config(config_file=str(operator.kubeconfig)))
    closed = make_namespace(kube, "rbac-closed")  # its owner bound nothing
    opted_in = make_namespace(kube, "rbac-open")
    create(kube, secrets_binding(opted_in))
    for ns in (closed, opted_in):
        secret(kube, ns, "views-db", {"url": "postgresql://app@db.example.com/views"})

    # The identity itself: Secrets by name only where bound, never listed; nothing it does not use.
    assert as_operator.secret(opted_in, "views-db") == {"url": "postgresql://app@db.example.com/views"}
    with pytest.raises(SecretForbidden):
        as_operator.secret(closed, "views-db")
    forbidden(lambda: as_operator.request("GET", f"/api/v1/namespaces/{opted_in}/secrets"))
    forbidden(lambda: as_operator.request("GET", "/api/v1/secrets"))
    forbidden(lambda: as_operator.request("GET", f"/api/v1/namespaces/{opted_in}/configmaps"))
    forbidden(lambda: as_operator.request("GET", "/api/v1/pods"))
    forbidden(lambda: as_operator.delete(API, ESA, opted_in, "anything"))
    forbidden(
        lambda: as_operator.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "projections.foldline.io")
    )
    forbidden(
        lambda: as_operator.request(
            "PATCH",
            "/apis/kopf.dev/v1/clusterkopfpeerings/someone-else",
            body={},
            content_type="application/merge-patch+json",
        )
    )

    # Through the operator: a reference to a Secret it may not read is a condition, not a crash.
    agg, guarded = aggregate_name(), aggregate_name()
    create(kube, aggregate(agg, closed, kafka_bootstrap))
    settled(kube, ESA, closed, agg, "TopicsReady", "True", "Verified")
    create(kube, projection("views", closed, agg, "views-db"))
    found = settled(kube, "Projection", closed, "views", "DatabaseReady", "False", "DatabaseSecretForbidden")
    assert "Secret views-db" in condition(found, "DatabaseReady")["message"]
    secret(kube, closed, "kafka-auth", {"security.protocol": "PLAINTEXT"})
    create(kube, aggregate(guarded, closed, kafka_bootstrap, secretRef={"name": "kafka-auth"}))
    settled(kube, ESA, closed, guarded, "TopicsReady", "False", "KafkaSecretForbidden")


def log_count(process: OperatorProcess, text: str) -> int:
    return (process.log_dir / f"operator-{process.starts}.log").read_text(errors="replace").count(text)


def test_namespaced_mode_works_with_exactly_the_chart_rules_and_nothing_more(
    kube: Kube,
    kubeconfig: Path,
    operator: OperatorProcess,
    kafka_bootstrap: str,
    aggregate_name: Callable[[], str],
    tmp_path: Path,
) -> None:
    served, other = make_namespace(kube, "rbac-served"), make_namespace(kube, "rbac-other")
    rbac = render_rbac("fl-ns", OPERATOR_NAMESPACE, {"operator": {"watchNamespaces": [served], "peering": PEERING}})
    cluster_wide = {r for o in rbac if o["kind"] == "ClusterRole" for rule in o["rules"] for r in rule["resources"]}
    assert cluster_wide == {"clusterkopfpeerings"}, "namespaced mode grants nothing namespaced cluster-wide"
    identity, as_operator = install_identity(kube, kubeconfig, rbac, tmp_path / "kubeconfig")
    for ns in (served, other):
        secret(kube, ns, "views-db", {"url": "sqlite:////var/lib/foldline/views.db"})

    # Refused: another namespace's Secret, listing Secrets, verbs and resources it does not use.
    assert as_operator.secret(served, "views-db") is not None
    with pytest.raises(SecretForbidden):
        as_operator.secret(other, "views-db")
    forbidden(lambda: as_operator.request("GET", f"/api/v1/namespaces/{served}/secrets"))
    forbidden(lambda: as_operator.get("apps/v1", "Deployment", other, "anything"))
    forbidden(lambda: as_operator.request("GET", "/apis/apps/v1/deployments"))
    forbidden(lambda: as_operator.delete(API, ESA, served, "anything"))
    forbidden(lambda: as_operator.request("PUT", f"/apis/apps/v1/namespaces/{served}/statefulsets/x", body={}))
    forbidden(lambda: as_operator.request("GET", f"/api/v1/namespaces/{served}/pods"))
    forbidden(lambda: as_operator.request("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"))
    forbidden(lambda: as_operator.request("GET", "/api/v1/namespaces"))
    message = forbidden(
        lambda: as_operator.request("POST", f"/api/v1/namespaces/{served}/configmaps", body={"metadata": {"name": "x"}})
    )
    assert "fl-ns" in message  # refused as the chart's ServiceAccount, not anonymously

    agg = aggregate_name()
    logs = tmp_path / "operator"
    logs.mkdir()
    process = OperatorProcess(identity, logs, PEERING, extra_env={"FOLDLINE_OPERATOR_NAMESPACES": served})
    paused, resumed = log_count(operator, "Pausing operations"), log_count(operator, "Resuming operations")
    try:
        # Above the session operator's priority: that one pauses (kopf peering) while this one acts.
        process.start(priority=100_000)
        wait_for("the session operator to pause", lambda: log_count(operator, "Pausing operations") > paused)
        create(kube, aggregate(agg, served, kafka_bootstrap))
        settled(kube, ESA, served, agg, "TopicsReady", "True", "Verified")
        wait_for(
            "the handler StatefulSet", lambda: kube.get("apps/v1", "StatefulSet", served, f"{agg}-command-handler")
        )

        # A projection: its projector is deployed, and the operator does not read the SQLite file (it would be
        # in the projector's pod) nor a database on its own loopback.
        create(kube, projection("views", served, agg, "views-db"))
        wait_for("the projector", lambda: kube.get("apps/v1", "Deployment", served, "views-projector-r1"))
        sqlite = settled(kube, "Projection", served, "views", "RevisionActive", "Unknown", "SqliteNotRead")
        assert condition(sqlite, "Ready")["status"] == "False"
        secret(kube, served, "local-db", {"url": "postgresql://app:pw@127.0.0.1:5432/views"})
        create(kube, projection("local", served, agg, "local-db"))
        local = settled(kube, "Projection", served, "local", "RevisionActive", "Unknown", "DatabaseHostRefused")
        assert "loopback" in condition(local, "RevisionActive")["message"]
        assert "pw" not in condition(local, "RevisionActive")["message"]

        # It never reached beyond its namespace (not even to watch): no refusal in its log.
        log = (logs / "operator-1.log").read_text(errors="replace")
        assert "Not enough permissions" not in log and "Forbidden" not in log, process.log_tail()
    finally:
        process.stop()
        wait_for("the session operator to resume", lambda: log_count(operator, "Resuming operations") > resumed, 120)


def test_secret_names_and_namespaces_narrow_what_the_chart_grants(kube: Kube, kubeconfig: Path, tmp_path: Path) -> None:
    team, elsewhere = make_namespace(kube, "rbac-team"), make_namespace(kube, "rbac-elsewhere")
    for ns in (team, elsewhere):
        secret(kube, ns, "kafka-auth", {"security.protocol": "PLAINTEXT"})
        secret(kube, ns, "unrelated", {"token": "x"})
    values = {
        "operator": {"peering": "rbac-narrow"},
        "rbac": {"secretNamespaces": [team], "secretNames": ["kafka-auth"]},
    }
    rbac = render_rbac("fl-narrow", OPERATOR_NAMESPACE, values)
    _, as_operator = install_identity(kube, kubeconfig, rbac, tmp_path / "kubeconfig")
    assert as_operator.secret(team, "kafka-auth") == {"security.protocol": "PLAINTEXT"}
    for ns, name in ((team, "unrelated"), (elsewhere, "kafka-auth"), (elsewhere, "unrelated")):
        with pytest.raises(SecretForbidden):
            as_operator.secret(ns, name)
    # The peering patch is the chart's own object only.
    forbidden(
        lambda: as_operator.request(
            "PATCH",
            f"/apis/kopf.dev/v1/clusterkopfpeerings/{PEERING}",
            body={},
            content_type="application/merge-patch+json",
        )
    )
    with pytest.raises(RuntimeError, match=r"rbac\.secretNamespaces is for the cluster-wide mode"):
        render_rbac("fl-narrow", OPERATOR_NAMESPACE, {**values, "operator": {"watchNamespaces": [team]}})
    assert render_rbac("fl-narrow", OPERATOR_NAMESPACE, {"rbac": {"create": False}}) == []
