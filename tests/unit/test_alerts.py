"""Alerts, monitors and dashboards as shipped: promtool checks and unit-tests every alert, the chart's copy
is the plain file, every alert has a runbook, the PodMonitor finds the pods the operator builds, the
dashboards are what ``foldline.observability.dashboards`` generates, and ``/metrics`` passes promtool's lint.

promtool comes from Debian's ``prometheus`` package (scripts/bootstrap.sh installs it); without it these
tests fail rather than skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from foldline.observability import dashboards, series
from foldline_operator import pods
from tests.unit.test_chart import CHART, _exported

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
ALERT_TESTS = REPO / "deploy" / "prometheus" / "alerts.test.yaml"


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: apt-get install prometheus (scripts/bootstrap.sh does)"
    return subprocess.run([binary, *args], input=stdin, capture_output=True, timeout=120, check=False)


def rules() -> list[dict[str, object]]:
    loaded = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_the_chart_ships_the_plain_rules_file_unchanged() -> None:
    assert (CHART / "files" / "alerts.yaml").read_bytes() == ALERTS.read_bytes()
    template = (CHART / "templates" / "prometheusrule.yaml").read_text()
    assert '.Files.Get "files/alerts.yaml"' in template and "kind: PrometheusRule" in template
    assert "if .Values.metrics.prometheusRule.enabled" in template


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout.decode()


def test_promtool_unit_tests_fire_every_alert_and_keep_healthy_series_silent() -> None:
    done = promtool("test", "rules", str(ALERT_TESTS))
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    cases = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    covered: dict[str, set[bool]] = {}
    for case in cases:
        for check in case["alert_rule_test"]:
            covered.setdefault(check["alertname"], set()).add(bool(check["exp_alerts"]))
    assert covered == {str(rule["alert"]): {True, False} for rule in rules()}


def test_the_unit_tests_would_catch_a_broken_rule(tmp_path: Path) -> None:
    """promtool test rules really compares: a rule whose threshold is off makes it fail."""
    broken = ALERTS.read_text().replace(
        "foldline_dead_letters_total[5m])) > 0", "foldline_dead_letters_total[5m])) > 5"
    )
    assert broken != ALERTS.read_text()
    (tmp_path / "alerts.yaml").write_text(broken)
    shutil.copy(ALERT_TESTS, tmp_path / "alerts.test.yaml")
    assert promtool("test", "rules", str(tmp_path / "alerts.test.yaml")).returncode != 0


def test_every_alert_has_a_runbook_and_queries_exported_metrics() -> None:
    operations = (REPO / "docs" / "operations.md").read_text()
    headings = {h.strip().lower() for h in re.findall(r"^#{2,4} (.+)$", operations, flags=re.M)}
    exported = _exported()
    for rule in rules():
        name = str(rule["alert"])
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert annotations["runbook"] == f"docs/operations.md#{name.lower()}"
        assert name.lower() in headings, f"docs/operations.md has no runbook section {name}"
        assert rule["labels"]["severity"] in ("warning", "critical")  # type: ignore[index]
        for metric in re.findall(r"\bfoldline_[a-z_]+", str(rule["expr"])):
            assert metric in exported, f"{name}: {metric} is not exported"


def test_the_pod_monitor_selects_the_pods_the_operator_builds() -> None:
    template = (CHART / "templates" / "podmonitor.yaml").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())["metrics"]
    assert values["podMonitor"]["enabled"] is False and values["prometheusRule"]["enabled"] is False
    assert "kind: PodMonitor" in template and "- port: http" in template
    assert f'values: ["{pods.MANAGED_BY}"]' in template
    built = {pods.labels("x", c, "agg")["app.kubernetes.io/component"] for c in values["podMonitor"]["components"]}
    assert built == {"command-handler", "projector", "gateway", "policy"}
    for name in ("podmonitor.yaml", "servicemonitor.yaml", "prometheusrule.yaml"):
        text = (CHART / "templates" / name).read_text()
        assert "with .Values.metrics.release" in text and "release: {{ . | quote }}" in text, name


def test_the_workload_pods_name_their_metrics_port_http() -> None:
    source = (REPO / "operator" / "foldline_operator" / "pods.py").read_text()
    assert '"ports": [{"name": "http", "containerPort": port' in source


def test_the_dashboards_are_generated_from_code() -> None:
    generated = dashboards.dashboards()
    on_disk = {p.name for p in (CHART / "dashboards").glob("*.json")}
    assert on_disk == set(generated)
    for name, board in generated.items():
        assert (CHART / "dashboards" / name).read_text() == dashboards.render(board), (
            f"{name} drifted: run python -m foldline.observability.dashboards --write"
        )
        names = [v["name"] for v in board["templating"]["list"]]
        assert names[:3] == ["datasource", "namespace", "pod"]
        for panel in board["panels"]:
            for target in panel["targets"]:
                assert 'namespace=~"$namespace"' in target["expr"] and 'pod=~"$pod"' in target["expr"]
    assert json.loads(dashboards.render(generated["foldline-aggregates.json"]))["uid"] == "foldline-aggregates"


def test_metrics_pass_promtool_lint_with_every_series_created_at_start() -> None:
    series.handler_started("lint")
    series.projector_started("lint", "view")
    series.gateway_started(["lint"], ["post_command"])
    series.operator_started(["Projection"])
    series.operator_resource("Projection", "ns", "view", ready=False, lag=4)
    text = generate_latest()
    done = promtool("check", "metrics", stdin=text)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    body = text.decode()
    assert 'foldline_dead_letters_total{aggregate="lint",code="undecodable"} 0.0' in body
    assert 'foldline_rebalances_total{aggregate="lint",kind="assigned"} 0.0' in body
    assert (
        'foldline_projection_records_skipped_total{aggregate="lint",projection="view",reason="undecodable"} 0.0' in body
    )
    assert 'foldline_operator_reconciles_total{kind="Projection",result="error"} 0.0' in body
    assert 'foldline_gateway_requests_total{aggregate="lint",route="post_command",status="503"} 0.0' in body


@pytest.mark.parametrize(
    ("metric", "seconds"), [("foldline_operator_reconcile_seconds", 23.0), ("foldline_store_restore_seconds", 1000.0)]
)
def test_histogram_buckets_reach_past_what_is_measured(metric: str, seconds: float) -> None:
    from foldline.observability import metrics

    histogram = next(
        m for m in vars(metrics).values() if getattr(m, "_name", None) == metric.removesuffix("_seconds") + "_seconds"
    )
    finite = [b for b in histogram._upper_bounds if b != float("inf")]
    assert max(finite) >= 4 * seconds or max(finite) >= 3600
    assert any(seconds <= b < 2 * seconds for b in finite)  # a bucket close above: quantiles stay meaningful


def test_a_revoked_partition_leaves_no_series() -> None:
    from foldline.observability import metrics

    metrics.CONSUMER_LAG.labels("gone", "g", "3").set(7)
    metrics.STORE_KEYS.labels("gone", "3").set(9)
    metrics.RESTORE_REMAINING.labels("gone", "3").set(0)
    metrics.PROJECTION_PARTITION_LAG.labels("gone", "v", "3").set(1)
    series.handler_partition_gone("gone", "g", 3)
    series.projector_partition_gone("gone", "v", 3)
    series.handler_partition_gone("gone", "g", 4)  # never measured: no error
    assert 'aggregate="gone"' not in generate_latest().decode()
