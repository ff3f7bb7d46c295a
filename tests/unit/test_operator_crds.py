"""The CRDs: generated from one source, identical on disk in manifests/ and the chart's files/, and structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from foldline_operator import crds

REPO = Path(__file__).resolve().parents[2]


def test_files_on_disk_equal_the_generated_ones() -> None:
    expected = crds.rendered_files(REPO)
    assert len(expected) == 10
    for path, text in expected.items():
        assert path.exists(), f"{path} missing: run `make crds`"
        assert path.read_text() == text, f"{path} differs from crds.py: run `make crds`"
    on_disk = {
        p
        for folder in ("manifests/crds", "charts/foldline/crds", "charts/foldline/files/crds")
        for p in (REPO / folder).glob("*.yaml")
    }
    assert on_disk == set(expected), "a stale CRD file is left over"


def test_check_mode_reports_no_drift(capsys: pytest.CaptureFixture[str]) -> None:
    assert crds.main(["--check", "--repo", str(REPO)]) == 0
    assert capsys.readouterr().out == ""


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for name, child in (schema.get("properties") or {}).items():
        out += _walk(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        out += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        out += _walk(schema["additionalProperties"], f"{path}{{}}")
    return out


@pytest.mark.parametrize("crd", crds.all_crds()[:3], ids=lambda c: c["spec"]["names"]["kind"])
def test_schemas_are_structural_and_defaults_fit(crd: dict[str, Any]) -> None:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        if "default" in node and "enum" in node:
            assert node["default"] in node["enum"], path
        if "default" in node and node.get("type") == "integer":
            assert node.get("minimum", node["default"]) <= node["default"] <= node.get("maximum", node["default"])
    assert yaml.safe_load(crds.render(crd)) == crd


def test_aggregate_crd_has_scale_columns_and_rules() -> None:
    version = crds.aggregate_crd()["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.handlers.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Ready",
        "Partitions",
        "Replicas",
        "Lag",
        "Reason",
        "Age",
    ]
    partitions = next(c for c in version["additionalPrinterColumns"] if c["name"] == "Partitions")
    assert partitions["jsonPath"] == ".status.partitions"  # what the topics have, not what was asked
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["partitions"]["x-kubernetes-validations"][0]["rule"] == "self >= oldSelf"
    assert spec["properties"]["suspend"]["default"] is False
    rules = " ".join(r["rule"] for r in spec["x-kubernetes-validations"])
    assert "self.handlers.replicas <= self.partitions" in rules
    assert "self.handlers.autoscaling.maxReplicas <= self.partitions" in rules
    assert spec["properties"]["deletionPolicy"] == {
        "type": "string",
        "description": spec["properties"]["deletionPolicy"]["description"],
        "enum": ["Retain", "Delete"],
        "default": "Retain",
    }
    assert spec["properties"]["allowPartitionGrowth"]["default"] is False
    assert crds.projection_crd()["spec"]["names"]["shortNames"] == ["proj"]


def test_policy_crd_names_columns_and_rules() -> None:
    crd = crds.policy_crd()
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("Policy", "policies", ["pol"])
    version = crd["spec"]["versions"][0]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Lag"] == ".status.lag"
    assert columns["Deadlines"] == ".status.scheduledDeadlines"
    assert columns["Replicas"] == ".status.replicas"
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["policy", "sources"]
    assert spec["properties"]["sources"]["minItems"] == 1
    assert any("policyName is immutable" in r["message"] for r in spec["x-kubernetes-validations"])
    assert version["subresources"] == {"status": {}}
