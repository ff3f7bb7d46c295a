"""The Helm chart without helm: values against their schema, template references, RBAC, dashboards.

What can be checked without helm (test_chart_render.py runs the real one): the values validate against
values.schema.json (a tiny validator for the keywords the schema uses), every ``.Values.x.y`` a template
reads exists in values.yaml, and every metric a dashboard queries is one foldline.observability.metrics
exports.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Metric

from foldline.observability import metrics
from tests.unit.chart_support import ROUTINE

CHART = Path(__file__).resolve().parents[2] / "charts" / "foldline"
_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "integer": int,
    "number": (int, float),
    "null": type(None),
}


def validate(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str = "$") -> list[str]:
    """Errors of ``value`` against the JSON Schema keywords values.schema.json uses."""
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return validate(value, target, root, path)
    errors: list[str] = []
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        ok = any(
            isinstance(value, _TYPES[t]) and not (t in ("integer", "number") and isinstance(value, bool)) for t in names
        )
        if not ok:
            return [f"{path}: {value!r} is not {types}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path}: too short")
        if len(value) > schema.get("maxLength", len(value)):
            errors.append(f"{path}: too long")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} > {schema['maximum']}")
    if isinstance(value, dict):
        errors += [f"{path}: {key} is required" for key in schema.get("required", ()) if key not in value]
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                errors += validate(item, properties[key], root, f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unknown key {key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += validate(item, schema["additionalProperties"], root, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += validate(item, schema["items"], root, f"{path}[{i}]")
    return errors


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return loaded


def test_values_validate_against_the_schema(values: dict[str, Any], schema: dict[str, Any]) -> None:
    assert validate(values, schema, schema) == []


@pytest.mark.parametrize("quantity", ["250m", "0.5", "1", 2, 0.25, "128Mi", "1Gi", "1e3", "500k"])
def test_the_schema_accepts_routine_values_and_kubernetes_quantities(
    values: dict[str, Any], schema: dict[str, Any], quantity: Any
) -> None:
    routine = {**values, **ROUTINE, "resources": {"requests": {"cpu": quantity, "memory": quantity}}}
    assert validate(routine, schema, schema) == []


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"replicaCount": "two"}, "$.replicaCount"),
        ({"operator": {"logFormat": "xml"}}, "$.operator.logFormat"),
        ({"surprise": True}, "unknown key surprise"),
        ({"metrics": {"port": 70000}}, "$.metrics.port"),
        ({"metrics": {"podMonitor": {"components": ["web"]}}}, "$.metrics.podMonitor.components[0]"),
        ({"metrics": {"prometheusRule": {"enabled": "yes"}}}, "$.metrics.prometheusRule.enabled"),
        ({"metrics": {"release": 1}}, "$.metrics.release"),
        ({"resources": {"requests": {"cpu": "lots"}}}, "$.resources.requests.cpu"),
        ({"resources": {"limits": {"memory": -1}}}, "$.resources.limits.memory"),
        ({"image": {"repository": "x", "digest": "latest"}}, "$.image.digest"),
        ({"tolerations": [{"operator": "Maybe"}]}, "$.tolerations[0].operator"),
        ({"topologySpreadConstraints": [{"maxSkew": 1}]}, "$.topologySpreadConstraints[0]: topologyKey is required"),
        ({"networkPolicy": {"egress": {"kafka": {"ports": [70000]}}}}, "$.networkPolicy.egress.kafka.ports[0]"),
        ({"fullnameOverride": "x" * 64}, "$.fullnameOverride: too long"),
        ({"rbac": {"create": "yes"}}, "$.rbac.create"),
        ({"rbac": {"secretNamespaces": ["Team_A"]}}, "$.rbac.secretNamespaces[0]"),
        ({"operator": {"databaseHosts": ["pg.example.com/x"]}}, "$.operator.databaseHosts[0]"),
    ],
)
def test_the_schema_rejects_bad_values(
    values: dict[str, Any], schema: dict[str, Any], change: dict[str, Any], error: str
) -> None:
    bad = {**values, **change}
    assert any(error in e for e in validate(bad, schema, schema))


def test_templates_read_only_values_that_exist(values: dict[str, Any]) -> None:
    for template in (CHART / "templates").glob("*"):
        for ref in re.findall(r"\.Values((?:\.[A-Za-z]+)+)", template.read_text()):
            node: Any = values
            for key in ref.strip(".").split("."):
                assert isinstance(node, dict) and key in node, f"{template.name}: .Values{ref} is not in values.yaml"
                node = node[key]


def rules(name: str) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = yaml.safe_load((CHART / "files" / name).read_text())
    return loaded


def grants(rule_list: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rule_list:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_chart_metadata_and_rbac() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "foldline"
    namespaced = grants(rules("rbac-rules.yaml"))
    # Exactly the verbs the operator (and kopf on its behalf) uses; tests/e2e/test_rbac.py shows it works.
    assert {k: v for k, v in namespaced.items() if k[0] != "foldline.io" or "/" in k[1]} == {
        ("foldline.io", "eventsourcedaggregates/status"): {"patch"},
        ("foldline.io", "projections/status"): {"patch"},
        ("foldline.io", "eventsourcedaggregates/finalizers"): {"update"},
        ("foldline.io", "projections/finalizers"): {"update"},
        ("foldline.io", "policies/status"): {"patch"},
        ("foldline.io", "policies/finalizers"): {"update"},
        ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
        ("apps", "statefulsets"): {"get", "list", "watch", "create", "patch", "delete"},
        ("", "services"): {"get", "create", "patch", "delete"},
        ("policy", "poddisruptionbudgets"): {"get", "create", "patch", "delete"},
        ("", "events"): {"create"},
        ("autoscaling", "horizontalpodautoscalers"): {"list"},
        ("keda.sh", "scaledobjects"): {"list"},
    }
    assert namespaced[("foldline.io", "eventsourcedaggregates")] == {"get", "list", "watch", "patch"}
    # Secrets: by name only, in their own file (granted per served namespace, never cluster-wide).
    assert grants(rules("rbac-secret-rules.yaml")) == {("", "secrets"): {"get"}}
    assert grants(rules("rbac-cluster-rules.yaml")) == {("kopf.dev", "clusterkopfpeerings"): {"list", "watch"}}
    assert grants(rules("rbac-crd-rules.yaml")) == {
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"}
    }
    everything = [r for f in (CHART / "files").glob("rbac-*.yaml") for r in rules(f.name)]
    assert all("*" not in rule["verbs"] and "*" not in rule["resources"] for rule in everything)
    template = (CHART / "templates" / "rbac.yaml").read_text()
    assert template.count("kind: ClusterRoleBinding") == 2  # the peering ClusterRole and, cluster-wide, the main one
    assert "{{- if .Values.rbac.create }}" in template


def _exported() -> set[str]:
    """Every sample name the metrics module's collectors expose (counters' _total, histograms' _bucket...)."""
    names: set[str] = set()
    for collector in vars(metrics).values():
        if hasattr(collector, "describe") and hasattr(collector, "_name"):
            for family in collector.describe():
                assert isinstance(family, Metric)
                suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}[
                    family.type
                ]
                names |= {family.name + s for s in suffixes}
    return names


def test_dashboards_query_only_exported_metrics() -> None:
    exported = _exported()
    assert "foldline_commands_total" in exported and "foldline_operator_reconcile_seconds_bucket" in exported
    dashboards = sorted((CHART / "dashboards").glob("*.json"))
    assert len(dashboards) >= 3
    for path in dashboards:
        board = json.loads(path.read_text())
        queries = [t["expr"] for p in board["panels"] for t in p["targets"]]
        queries += [v["query"] for v in board["templating"]["list"] if v.get("type") == "query"]
        assert board["panels"] and all(p["targets"] for p in board["panels"]), path.name
        for query in queries:
            for name in re.findall(r"\bfoldline_[a-z_]+", query):
                if name == "foldline_":  # a variable's {__name__=~"foldline_.+"}: every foldline metric
                    continue
                assert name in exported, f"{path.name}: {name} is not exported by foldline"


def test_dashboard_configmaps_carry_the_grafana_label() -> None:
    template = (CHART / "templates" / "dashboards.yaml").read_text()
    assert 'grafana_dashboard: "1"' in template and '.Files.Glob "dashboards/*.json"' in template


def test_the_operator_deployment_sets_only_settings_the_operator_reads() -> None:
    from foldline_operator.config import OperatorConfig

    template = (CHART / "templates" / "deployment.yaml").read_text()
    names = set(re.findall(r"name: (FOLDLINE_OPERATOR_[A-Z_]+)", template))
    assert names >= {"FOLDLINE_OPERATOR_RESYNC_SECONDS", "FOLDLINE_OPERATOR_PEERING"}
    defaults = OperatorConfig.from_env({"FOLDLINE_OPERATOR_PRIORITY": "1"})
    for name in names:
        value = {"FOLDLINE_OPERATOR_NAMESPACES": "ns1"}.get(name, "7")
        changed = OperatorConfig.from_env({"FOLDLINE_OPERATOR_PRIORITY": "1", name: value})
        assert changed != defaults, f"{name} is set by the chart but not read by the operator"
    assert 'command: ["foldline-operator"]' in template
