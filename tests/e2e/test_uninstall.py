"""Uninstall with the operator gone: only an aggregate whose topics go with it (deletionPolicy Delete)
has a finalizer; deleting a namespace completes without an operator once that finalizer is released."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from foldline.topics import TopicNames
from foldline_operator.kube import Kube
from tests.e2e.support import API, ESA, REPO, OperatorProcess, create, manifest, patch, wait_for
from tests.e2e.test_aggregate import esa, settled, topic_state
from tests.e2e.test_operator_process import spec_for

pytestmark = pytest.mark.e2e

FINALIZER = "foldline.io/finalizer"


@pytest.fixture
def operator_stopped_later(operator: OperatorProcess) -> Iterator[OperatorProcess]:
    """The session's operator, which the test stops (helm uninstall); started again afterwards."""
    try:
        yield operator
    finally:
        if operator.proc is None or operator.proc.poll() is not None:
            operator.start()


def finalizers(kube: Kube, kind: str, namespace: str, name: str) -> list[str]:
    found = kube.get(API, kind, namespace, name)
    assert found is not None
    return list(found["metadata"].get("finalizers") or ())


def test_namespace_deletion_completes_with_the_operator_gone(
    kube: Kube,
    kubeconfig: Path,
    operator_stopped_later: OperatorProcess,
    namespace: str,
    kafka_bootstrap: str,
    kafka_admin: AdminClient,
    aggregate_name: Callable[[], str],
) -> None:
    kept, deleting = aggregate_name(), aggregate_name()
    create(kube, manifest(ESA, kept, namespace, spec_for(kept, kafka_bootstrap)))  # Retain, the default
    create(
        kube, manifest(ESA, deleting, namespace, {**spec_for(deleting, kafka_bootstrap), "deletionPolicy": "Delete"})
    )
    projection = {
        "aggregateRef": {"name": kept},
        "projector": "tests.e2e.views:invoice_list_r1",
        "revision": 1,
        "database": {"secretRef": {"name": "views-db"}},
    }
    create(kube, manifest("Projection", "invoice-list", namespace, projection))
    for name in (kept, deleting):
        settled(kube, namespace, name, "TopicsReady", "True")
    wait_for(
        "the projection seen", lambda: (kube.get(API, "Projection", namespace, "invoice-list") or {}).get("status")
    )

    # Only the aggregate whose deletion has work to do carries a finalizer; switching its policy
    # to Retain takes it away, back to Delete adds it again.
    wait_for("the finalizer of the Delete one", lambda: FINALIZER in finalizers(kube, ESA, namespace, deleting))
    assert finalizers(kube, ESA, namespace, kept) == []
    assert finalizers(kube, "Projection", namespace, "invoice-list") == []
    patch(kube, ESA, namespace, deleting, {"spec": {"deletionPolicy": "Retain"}})
    wait_for("finalizer removed", lambda: FINALIZER not in finalizers(kube, ESA, namespace, deleting), 30)
    patch(kube, ESA, namespace, deleting, {"spec": {"deletionPolicy": "Delete"}})
    wait_for("finalizer back", lambda: FINALIZER in finalizers(kube, ESA, namespace, deleting), 30)

    # helm uninstall: the operator is gone. Then the namespace is deleted.
    operator_stopped_later.stop()
    kube.delete("v1", "Namespace", "", namespace)
    wait_for("the Retain aggregate gone", lambda: kube.get(API, ESA, namespace, kept) is None, 60)
    wait_for("the Projection gone", lambda: kube.get(API, "Projection", namespace, "invoice-list") is None, 60)
    # The Delete one waits for an operator that will not come: released, its deletion completes.
    assert esa(kube, namespace, deleting)["metadata"].get("deletionTimestamp")
    released = subprocess.run(
        [sys.executable, "-m", "foldline_operator.uninstall", "--namespace", namespace],
        env={"KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert f"released EventSourcedAggregate {namespace}/{deleting}; topics kept: " in released
    wait_for("the namespace gone", lambda: kube.get("v1", "Namespace", "", namespace) is None, 120)
    # Nothing deleted the topics (no operator ran the policy): kept, as the command said.
    assert all(topic_state(kafka_admin, t) is not None for t in TopicNames(deleting).all())
