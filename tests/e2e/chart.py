"""The chart's RBAC, rendered by helm, installed for a ServiceAccount whose token the operator then uses.

helm is the one ``scripts/cluster.sh build`` (bootstrap) builds into ``.cache/cluster/bin``; a missing helm
fails the tests that need it (never a skip, never a hand-written copy of the rules).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml
from kubernetes import config as k8s_config

from foldline_operator.kube import Kube
from tests.e2e.support import REPO

CHART = REPO / "charts" / "foldline"
RBAC_KINDS = ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


def helm_binary() -> Path:
    cache = Path(os.environ.get("FOLDLINE_CACHE_DIR") or REPO / ".cache")
    helm = cache / "cluster" / "bin" / "helm"
    if not helm.is_file():
        raise RuntimeError(f"{helm} is missing: scripts/cluster.sh build (make install) builds it")
    return helm


def render_rbac(release: str, namespace: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    """The Roles, ClusterRoles and bindings of the whole chart rendered by ``helm template`` with ``values``."""
    with tempfile.TemporaryDirectory() as home:
        values_file = Path(home) / "values.yaml"
        values_file.write_text(yaml.safe_dump(values))
        env = {**os.environ, **{f"HELM_{d}_HOME": str(Path(home) / d.lower()) for d in ("CACHE", "CONFIG", "DATA")}}
        args = ["template", release, str(CHART), "--namespace", namespace]
        result = subprocess.run(
            [str(helm_binary()), *args, "--values", str(values_file)],
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
    if result.returncode != 0:
        raise RuntimeError(f"helm template failed (exit {result.returncode}):\n{result.stderr}")
    return [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] in RBAC_KINDS]


def install_identity(
    kube: Kube, admin_kubeconfig: Path, rbac: list[dict[str, Any]], target: Path, hours: int = 4
) -> tuple[Path, Kube]:
    """Apply ``rbac``, create the ServiceAccount its bindings name, and write a kubeconfig with its token;
    return it and a client that acts as that ServiceAccount."""
    subjects = {(s["namespace"], s["name"]) for o in rbac for s in o.get("subjects") or ()}
    assert len(subjects) == 1, subjects
    ((namespace, account),) = subjects
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    kube.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, "namespace": namespace}})
    for obj in rbac:
        meta = obj["metadata"]
        if meta.get("namespace"):
            kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": meta["namespace"]}})
        kube.apply(obj)
    token = kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": hours * 3600},
        },
    )
    assert token is not None
    config = yaml.safe_load(admin_kubeconfig.read_text())
    config["users"] = [{"name": account, "user": {"token": token["status"]["token"]}}]
    config["contexts"] = [{"name": account, "context": {"cluster": config["clusters"][0]["name"], "user": account}}]
    config["current-context"] = account
    target.write_text(yaml.safe_dump(config))
    target.chmod(0o600)
    return target, Kube(k8s_config.new_client_from_config(config_file=str(target)))
