"""The chart's rendered objects, accepted by the real API server (server-side apply, dry run: a misspelt or
misplaced field is refused, not dropped), with the defaults and routine values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from foldline_operator.kube import Kube, KubeError
from tests.unit.chart_support import ROUTINE, helm

pytestmark = pytest.mark.e2e


def plural(kind: str) -> str:
    lower = kind.lower()
    return lower[:-1] + "ies" if lower.endswith("y") else lower + "s"


def dry_run(kube: Kube, obj: dict[str, Any]) -> dict[str, Any] | None:
    api = obj["apiVersion"]
    base = f"/apis/{api}" if "/" in api else f"/api/{api}"
    namespace = obj["metadata"].get("namespace")
    where = f"/namespaces/{namespace}" if namespace else ""
    return kube.request(
        "PATCH",
        f"{base}{where}/{plural(obj['kind'])}/{obj['metadata']['name']}",
        body=obj,
        content_type="application/apply-patch+yaml",
        query={"dryRun": "All", "fieldManager": "chart-test", "fieldValidation": "Strict", "force": "true"},
    )


@pytest.mark.parametrize(
    "values",
    [{}, ROUTINE, {**ROUTINE, "podDisruptionBudget": {"enabled": True, "minAvailable": None, "maxUnavailable": "50%"}}],
    ids=["defaults", "routine", "percent"],
)
def test_the_api_server_accepts_every_rendered_object(
    kube: Kube, crds: list[dict[str, Any]], namespace: str, tmp_path: Path, values: dict[str, Any]
) -> None:
    result = helm("template", "rel", "--namespace", namespace, values=values, tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    objects = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "PodDisruptionBudget", "ServiceAccount", "Service"} <= kinds
    assert ("NetworkPolicy" in kinds) == bool(values.get("networkPolicy", {}).get("enabled"))
    for obj in objects:
        accepted = dry_run(kube, obj)
        assert accepted is not None, f"{obj['kind']} {obj['metadata']['name']}: not found"
        assert accepted["kind"] == obj["kind"]
        if obj["kind"] == "Deployment":  # the placement the API server stored (defaults filled in)
            pod = accepted["spec"]["template"]["spec"]
            assert pod.get("priorityClassName") == values.get("priorityClassName")
            assert pod.get("topologySpreadConstraints") == values.get("topologySpreadConstraints")


def test_a_misplaced_field_is_refused_not_dropped(
    kube: Kube, crds: list[dict[str, Any]], namespace: str, tmp_path: Path
) -> None:
    """What makes the test above able to fail: server-side apply refuses fields the API does not know."""
    result = helm("template", "rel", "--namespace", namespace, tmp=tmp_path)
    [deployment] = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["priorityClassName"] = "misplaced"
    with pytest.raises(
        KubeError, match=r"containers\[name=\"operator\"\]\.priorityClassName: field not declared in schema"
    ):
        dry_run(kube, deployment)
