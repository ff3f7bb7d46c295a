"""The operator's dashboard and alerts against a real Prometheus: it scrapes the operator (against the real
API server) and the command handler its StatefulSet describes, run here, while an aggregate goes from not
Ready to Ready, a second one waits for a missing Secret, and the first is deleted."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from foldline_operator.kube import Kube
from tests.e2e.support import API, ESA, OperatorProcess, create, manifest, start_pods, wait_for
from tests.kafka_support import command, send
from tests.prometheus_support import Prometheus, alert_rules, fill, panel_queries, wait_until

pytestmark = pytest.mark.e2e

CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    server = Prometheus(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def spec(name: str, bootstrap: str, **extra: object) -> dict[str, object]:
    return {
        "aggregate": f"tests.named_invoices:{name.replace('-', '_')}",
        "image": "foldline:dev",
        "partitions": 3,
        "replicationFactor": 1,
        "kafka": {"bootstrapServers": bootstrap, **extra},
    }


def test_operator_panels_and_alerts_against_a_real_prometheus(
    kube: Kube,
    operator: OperatorProcess,
    namespace: str,
    kafka_bootstrap: str,
    aggregate_name: Callable[[], str],
    prometheus: Prometheus,
    tmp_path: Path,
) -> None:
    prometheus.scrape("operator", operator.port)
    name, waiting = aggregate_name(), aggregate_name()
    create(kube, manifest(ESA, name, namespace, spec(name, kafka_bootstrap)))
    create(kube, manifest(ESA, waiting, namespace, spec(waiting, kafka_bootstrap, secretRef={"name": "absent"})))
    ready = f'foldline_operator_resource_ready{{resource_namespace="{namespace}", resource_name="{name}"}}'

    # No handler pod runs yet: the operator reports the resource not Ready.
    wait_until(lambda: prometheus.query(f"{ready} == 0"), 60, "the resource reported not Ready")
    pods = start_pods(kube, f"{name}-command-handler", namespace, tmp_path)
    try:
        prometheus.scrape("handler", pods[0].port)
        wait_until(lambda: prometheus.query(f"{ready} == 1"), 90, "the resource reported Ready")
        send(kafka_bootstrap, f"{name}.commands", [command("inv-1", "CreateInvoice", CREATE)])
        lag = f'foldline_operator_resource_lag{{resource_namespace="{namespace}", resource_name="{name}"}}'
        wait_until(lambda: prometheus.query(f"{lag} == 0"), 90, "the lag the operator measured")
        errors = 'foldline_operator_errors_total{kind="EventSourcedAggregate", reason="KafkaSecretMissing"}'
        wait_until(lambda: prometheus.query(errors), 60, "the missing Secret counted as an error")

        at = prometheus.steady_instant({"operator", "handler"})  # one instant, every scrape complete
        empty = []
        for board, title, expr in panel_queries():
            result = prometheus.query(fill(expr, name), at)  # every panel of every dashboard parses
            if board == "foldline-operator.json" and not result:
                empty.append(title)
        assert not empty, f"operator panels without data: {empty}"
        waiting_ready = prometheus.query(
            f'min by (resource_name) (foldline_operator_resource_ready{{resource_namespace="{namespace}"}})', at
        )
        assert {s["metric"]["resource_name"]: s["value"][1] for s in waiting_ready} == {name: "1", waiting: "0"}
        reconciles = 'sum(foldline_operator_reconcile_seconds_count{kind="EventSourcedAggregate"})'
        assert prometheus.value(reconciles, at) >= 2
        for rule in alert_rules():
            prometheus.query(rule["expr"])
            for metric in set(re.findall(r"\bfoldline_operator_[a-z_]+", rule["expr"])):
                assert prometheus.query(f"count({metric})", at), f"{rule['alert']}: no {metric} scraped"
    finally:
        for pod in pods:
            pod.stop()

    # A deleted resource leaves no series behind (a stale "not Ready" would page for ever).
    kube.delete(API, ESA, namespace, name)
    wait_for("the resource deleted", lambda: kube.get(API, ESA, namespace, name) is None, 180)
    wait_until(lambda: not prometheus.query(ready), 60, "the deleted resource's series to go")
    assert f'resource_name="{name}"' not in operator.metrics()
