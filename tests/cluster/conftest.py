"""The cluster session: the real one-node cluster (``scripts/cluster.sh up``), brought down at the end.

Every test here runs real pods: kubelet, containerd, runc, a bridge CNI network and kube-proxy. The
binaries and images come from ``make install``; if any is missing the session fixture fails with the
script's message (these tests are never skipped).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.cluster.node import Cluster, ClusterError, start_cluster, stop_cluster, wait_for
from tests.conftest import REPO

# The busybox image `scripts/cluster.sh build` makes and `up` imports (sh, httpd, nc, wget...).
BUSYBOX = "localhost/foldline/busybox:1"


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    node = start_cluster(REPO)
    yield node
    # FOLDLINE_KEEP_CLUSTER=1 leaves it running to poke at after a failure (`scripts/cluster.sh env`).
    if not os.environ.get("FOLDLINE_KEEP_CLUSTER"):
        stop_cluster(REPO)


def _delete_namespace(cluster: Cluster, name: str) -> None:
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")
    try:
        # A namespace that never goes away means a finalizer or the kubelet is stuck: that is a failure.
        wait_for(f"namespace {name} deleted", lambda: cluster.get("namespace", name) is None, timeout=180)
    except AssertionError as exc:
        raise ClusterError(f"{exc}\n{cluster.describe_pods(name)}") from None


@pytest.fixture(scope="module")
def namespace(cluster: Cluster) -> Iterator[str]:
    """A namespace of the test module's own, deleted (and waited for) afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    # Pods are admitted only once the namespace's `default` ServiceAccount exists.
    wait_for(f"serviceaccount {name}/default", lambda: cluster.get("serviceaccount", "default", name), timeout=60)
    yield name
    _delete_namespace(cluster, name)


@pytest.fixture
def run_pod(cluster: Cluster, namespace: str) -> Callable[..., str]:
    """Create a busybox pod running ``command`` (pod overrides merged in) and wait until it is Ready."""

    def make(name: str, command: str, **spec: object) -> str:
        container = {
            "name": "main",
            "image": BUSYBOX,
            "imagePullPolicy": "Never",
            "command": ["/bin/sh", "-c", command],
            **spec.pop("container", {}),  # type: ignore[dict-item]
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"containers": [container], "terminationGracePeriodSeconds": 1, **spec},
        }
        cluster.apply(pod, namespace=namespace)
        cluster.wait_pod_ready(namespace, name)
        return name

    return make
