"""The chart's routine values (what platform teams set) and the helm that bootstrap builds."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "foldline"
DIGEST = "sha256:" + "ab" * 32

#: Values a platform team sets on most installs; the schema accepts them and the templates honour them.
ROUTINE: dict[str, Any] = {
    "nameOverride": "fl",
    "fullnameOverride": "platform-foldline",
    "global": {"imageRegistry": "registry.example.com"},
    "image": {"repository": "team/foldline", "tag": "1.2.3", "digest": DIGEST, "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "pull"}],
    "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": 1, "memory": "0.5Gi"}},
    "podAnnotations": {"team.example.com/owner": "payments"},
    "podLabels": {"cost-center": "cc-42"},
    "nodeSelector": {"kubernetes.io/os": "linux", "pool": "system"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "system", "effect": "NoSchedule"}],
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "operator"}},
                    },
                }
            ]
        }
    },
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "operator"}},
        }
    ],
    "priorityClassName": "system-cluster-critical",
    "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 2000, "fsGroup": 2000},
    "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
    "extraEnv": [
        {"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ],
    "podDisruptionBudget": {"enabled": True, "minAvailable": 1},
    "networkPolicy": {
        "enabled": True,
        "egress": {
            "apiServer": {"ports": [6443], "to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}]},
            "kafka": {"ports": [9094], "to": [{"namespaceSelector": {"matchLabels": {"name": "kafka"}}}]},
        },
        "ingress": {"from": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
    },
}


def helm_binary() -> Path:
    """The helm ``scripts/cluster.sh build`` puts in the cluster cache (as tests/cluster/node.py finds it).

    Absent means bootstrap has not run: that fails the test (``make test`` builds it first), never skips.
    """
    cache = Path(os.environ.get("FOLDLINE_CACHE_DIR") or REPO / ".cache")
    helm = cache / "cluster" / "bin" / "helm"
    if not os.access(helm, os.X_OK):
        pytest.fail(f"helm not found at {helm}: run `make install` (scripts/cluster.sh build) first", pytrace=False)
    return helm


def helm(*args: str, values: dict[str, Any] | None = None, tmp: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run helm offline against the chart (no cluster, no repositories), with ``values`` as a values file."""
    extra: list[str] = []
    if values is not None:
        assert tmp is not None
        path = tmp / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        extra = ["-f", str(path)]
    home = (tmp or REPO / ".cache") / "helm-home"
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": os.devnull,
    }
    return subprocess.run(
        [str(helm_binary()), *args, str(CHART), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
