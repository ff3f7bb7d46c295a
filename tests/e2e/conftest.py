"""The e2e session: a real control plane, the CRDs from manifests/, and the operator as a real process.

The operator runs under the chart's own RBAC rules (``charts/foldline/files/rbac-rules.yaml``) with a
ServiceAccount token, not as an admin: a rule the chart lacks fails these tests.
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
from tests.e2e.envtest import start_control_plane, stop_control_plane
from tests.e2e.support import REPO, OperatorProcess, create, wait_for

OPERATOR_NAMESPACE = "foldline-system"
PEERING = "foldline-e2e"


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


def _operator_kubeconfig(kube: Kube, admin_kubeconfig: Path, target: Path) -> Path:
    """A kubeconfig for a ServiceAccount bound to the chart's ClusterRole rules."""
    rules = yaml.safe_load((REPO / "charts" / "foldline" / "files" / "rbac-rules.yaml").read_text())
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}})
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "foldline-operator", "namespace": OPERATOR_NAMESPACE},
        }
    )
    kube.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "foldline-operator"},
            "rules": rules,
        }
    )
    kube.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "foldline-operator"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "foldline-operator"},
            "subjects": [{"kind": "ServiceAccount", "name": "foldline-operator", "namespace": OPERATOR_NAMESPACE}],
        }
    )
    token = kube.request(
        "POST",
        f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/serviceaccounts/foldline-operator/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 4 * 3600},
        },
    )
    assert token is not None
    config = yaml.safe_load(admin_kubeconfig.read_text())
    config["users"] = [{"name": "foldline-operator", "user": {"token": token["status"]["token"]}}]
    config["contexts"] = [
        {"name": "operator", "context": {"cluster": config["clusters"][0]["name"], "user": "foldline-operator"}}
    ]
    config["current-context"] = "operator"
    target.write_text(yaml.safe_dump(config))
    target.chmod(0o600)
    return target


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
    process = OperatorProcess(_operator_kubeconfig(kube, kubeconfig, logs / "kubeconfig"), logs, PEERING)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def namespace(kube: Kube) -> str:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    create(kube, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


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
