"""A Projection end to end: a projector Deployment per revision, run locally from its pod spec; a revision
bump starts a rebuild beside the serving revision, and the old projector goes once the catalog switched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from foldline.projection import open_store
from foldline.topics import TopicNames
from foldline_operator.kube import Kube
from tests.e2e.support import (
    API,
    ESA,
    LocalPod,
    OperatorProcess,
    condition,
    create,
    events_of,
    manifest,
    patch,
    start_pods,
    wait_for,
)
from tests.kafka_support import command, send, wait_for_results

pytestmark = pytest.mark.e2e

CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}


def projection(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    found = kube.get(API, "Projection", namespace, name)
    assert found is not None
    return found


def projectors(kube: Kube, namespace: str, name: str) -> set[str]:
    selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/component=projector"
    return {d["metadata"]["name"] for d in kube.list("apps/v1", "Deployment", namespace, selector)}


def test_revision_bump_rebuilds_beside_the_serving_revision(
    kube: Kube,
    operator: OperatorProcess,
    namespace: str,
    kafka_bootstrap: str,
    aggregate_name: Callable[[], str],
    tmp_path: Path,
) -> None:
    agg = aggregate_name()
    create(
        kube,
        manifest(
            ESA,
            agg,
            namespace,
            {
                "aggregate": f"tests.named_invoices:{agg.replace('-', '_')}",
                "image": "foldline:dev",
                "partitions": 2,
                "replicationFactor": 1,
                "kafka": {"bootstrapServers": kafka_bootstrap},
            },
        ),
    )
    database = tmp_path / "views.db"
    create(
        kube,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "views-db", "namespace": namespace},
            "stringData": {"url": f"sqlite:///{database}"},
        },
    )
    local: list[LocalPod] = []
    try:
        local += start_pods(kube, f"{agg}-command-handler", namespace, tmp_path)
        send(
            kafka_bootstrap,
            TopicNames(agg).commands,
            [command(f"inv-{i}", "CreateInvoice", {**CREATE, "customer": f"c{i}"}) for i in range(20)],
        )
        wait_for_results(kafka_bootstrap, agg, 20, timeout=60)

        create(
            kube,
            manifest(
                "Projection",
                "invoice-list",
                namespace,
                {
                    "aggregateRef": {"name": agg},
                    "projector": "tests.e2e.views:invoice_list_r1",
                    "revision": 1,
                    "database": {"secretRef": {"name": "views-db"}},
                },
            ),
        )
        r1 = wait_for("projector r1", lambda: kube.get("apps/v1", "Deployment", namespace, "invoice-list-projector-r1"))
        container = r1["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == [
            "foldline",
            "projector",
            "--projection",
            "tests.e2e.views:invoice_list_r1",
            "--aggregate-name",
            agg,
            "--view-name",
            "invoice-list",
        ]
        assert {
            "name": "FOLDLINE_PROJECTION_DATABASE",
            "valueFrom": {"secretKeyRef": {"name": "views-db", "key": "url"}},
        } in container["env"]
        local += start_pods(kube, "invoice-list-projector-r1", namespace, tmp_path)

        def ready() -> dict[str, Any] | None:
            p = projection(kube, namespace, "invoice-list")
            current = p["status"].get("observedGeneration") == p["metadata"]["generation"]
            return p if current and condition(p, "Ready").get("status") == "True" else None

        serving = wait_for("revision 1 ready", ready, 90)
        assert serving["status"]["activeRevision"] == 1 and serving["status"].get("rebuild") is None
        wait_for("revision 1 caught up", lambda: projection(kube, namespace, "invoice-list")["status"]["lag"] == 0, 60)

        # The bump: a second projector beside the first, which keeps serving; status shows the rebuild.
        patch(
            kube,
            "Projection",
            namespace,
            "invoice-list",
            {"spec": {"revision": 2, "projector": "tests.e2e.views:invoice_list_r2"}},
        )
        wait_for(
            "both projectors",
            lambda: (
                projectors(kube, namespace, "invoice-list")
                == {"invoice-list-projector-r1", "invoice-list-projector-r2"}
            ),
        )
        rebuilding = wait_for(
            "rebuild in status",
            lambda: (p := projection(kube, namespace, "invoice-list"))["status"].get("rebuild") and p,
        )
        assert rebuilding["status"]["rebuild"]["revision"] == 2
        assert rebuilding["status"]["rebuild"]["progress"] == 0.0  # its projector has not started yet
        assert rebuilding["status"]["activeRevision"] == 1
        assert condition(rebuilding, "RevisionActive")["reason"] == "Rebuilding"

        local += start_pods(kube, "invoice-list-projector-r2", namespace, tmp_path)
        switched = wait_for(
            "revision 2 active",
            lambda: (p := projection(kube, namespace, "invoice-list"))["status"].get("activeRevision") == 2 and p,
            90,
        )
        wait_for("r1 retired", lambda: projectors(kube, namespace, "invoice-list") == {"invoice-list-projector-r2"})
        try:
            done = wait_for("revision 2 ready", ready, 120)
        except AssertionError as exc:  # say which condition held it back
            status = projection(kube, namespace, "invoice-list").get("status")
            raise AssertionError(f"{exc}; status: {status}") from None
        assert done["status"].get("rebuild") is None and done["status"]["progress"] == 1.0
        assert switched["status"]["activeRevision"] == 2
        assert kube.get("policy/v1", "PodDisruptionBudget", namespace, "invoice-list-projector-r1") is None
        assert "ProjectorRetired" in {r for r, _ in events_of(kube, namespace, "invoice-list")}
        store = open_store(f"sqlite:///{database}")
        try:
            info = store.view_info("invoice-list")
            assert info.active_revision == 2
            assert len(store.read_rows("invoice-list", filters={}, limit=100)) == 20
        finally:
            store.close()
    finally:
        for p in local:
            p.stop()
