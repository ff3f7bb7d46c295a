"""The e2e session: a real control plane, the CRDs from manifests/, and the operator as a real process.

The operator runs under the chart's own RBAC (templates/rbac.yaml rendered by helm, cluster-wide mode) with a
ServiceAccount token, not as an admin: a rule the chart lacks fails these tests. Each test namespace grants
it Secrets as a tenant would, with a RoleBinding to the chart's "<release>-secrets" ClusterRole.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka.admin import AdminClient
from kubernetes import config as k8s_config

from foldline.topics import TopicNames, delete_topics
from foldline_operator.kube import Kube
from tests.e2e.chart import install_identity, render_rbac
from tests.e2e.envtest import start_control_plane, stop_control_plane
from tests.e2e.support import REPO, OperatorProcess, create, wait_for

OPERATOR_NAMESPACE = "foldline-system"
PEERING = "foldline-e2e"
RELEASE = "foldline"  # the chart's full name, its ServiceAccount's and its ClusterRoles' prefix


@pytest.fixture(scope="session")
def kubeconfig() -> Iterator[Path]:
    path = start_control_plane(REPO)
    yield path
    stop_control_plane(REPO)


@pytest.fixture(scope="session")
def kube(kubeconfig: Path) -> Kube:
    return Kube(k8s_config.new_client_from_config(config_file=str(kubeconfig)))


@pytest.fixture(scope="session")
def crds(kube: Kube) -> list[dict[str, Any]]:
    """Every CRD of manifests/crds, applied and Established."""
    installed = []
    for path in sorted((REPO / "manifests" / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        kube.apply(crd)
        installed.append(crd)

    def established(name: str) -> Callable[[], bool]:
        return lambda: _established(name)

    def _established(name: str) -> bool:
        found = kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", name) or {}
        return any(
            c["type"] == "Established" and c["status"] == "True"
            for c in (found.get("status") or {}).get("conditions") or ()
        )

    for crd in installed:
        name: str = crd["metadata"]["name"]
        wait_for(f"CRD {name} established", established(name))
    return installed


def operator_rbac(peering: str = PEERING) -> list[dict[str, Any]]:
    """The chart's RBAC in its cluster-wide mode (the default values), for the session's operator."""
    return render_rbac(RELEASE, OPERATOR_NAMESPACE, {"operator": {"peering": peering}})


@pytest.fixture(scope="session")
def operator(
    kube: Kube,
    kubeconfig: Path,
    crds: list[dict[str, Any]],
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """The operator, running for the whole session (a test may kill and restart it)."""
    logs = tmp_path_factory.mktemp("operator")
    kube.apply({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": PEERING}})
    identity, _ = install_identity(kube, kubeconfig, operator_rbac(), logs / "kubeconfig")
    process = OperatorProcess(identity, logs, PEERING)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def namespace(kube: Kube) -> str:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    create(kube, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    create(kube, secrets_binding(name))
    return name


def secrets_binding(namespace: str) -> dict[str, Any]:
    """A namespace owner's opt-in: the operator may read this namespace's Secrets (docs/operator.md)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"{RELEASE}-secrets", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"{RELEASE}-secrets"},
        "subjects": [{"kind": "ServiceAccount", "name": RELEASE, "namespace": OPERATOR_NAMESPACE}],
    }


@pytest.fixture
def aggregate_name(kafka_admin: AdminClient) -> Iterator[Callable[[], str]]:
    """Unique aggregate names (``inv-<hex>``, loadable as ``tests.named_invoices:inv_<hex>``); their topics
    are deleted after the test."""
    made: list[str] = []

    def make() -> str:
        made.append(f"inv-{uuid.uuid4().hex[:10]}")
        return made[-1]

    yield make
    for name in made:
        delete_topics(kafka_admin, TopicNames(name).all())
