"""Dashboards and alerts proven against a real Prometheus scraping real processes.

A Prometheus from Debian's package (loopback, its own port, 1 s scrapes, foldline's alert rules loaded)
scrapes a command handler and a projector (child processes) and the gateway, while the test drives
commands, a poison record, a rebalance (a second handler joins and leaves) and a projection rebuild. Then
every PromQL expression of every dashboard panel and every alert, read from the chart's JSON and the rules
file, is evaluated through Prometheus' HTTP API: each must parse, each one the test exercised must return
data, and the values the test knows must be right (one poison record: the dead-letter increase is 1 and
the alert fires; each partition's lag is exported by exactly one handler, and sums to the true lag).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from foldline.aggregate import AggregateSpec
from foldline.examples.invoices.views import InvoiceList
from foldline.gateway import Gateway, GatewayServer
from foldline.gateway.server import free_port
from foldline.handler.wiring import build_command_handler
from foldline.settings import HandlerSettings, KafkaSettings
from foldline.topics import TopicNames, handler_group
from tests.conftest import aggregate_path
from tests.integration.conftest import gateway_settings
from tests.kafka_support import HandlerProcess, command, send, start_handler
from tests.prometheus_support import Prometheus, alert_rules, fill, panel_queries, variable_queries, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

VIEWS = "foldline.examples.invoices.views"
CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}
LOOPBACK = {"FOLDLINE_HTTP_HOST": "127.0.0.1"}
#: Metrics no process of this test exports (tests/e2e/test_metrics.py checks the operator's panels).
NOT_EXERCISED = re.compile(r"foldline_operator_")


class InvoiceListR2(InvoiceList):
    """Revision 2 of the invoice list: the projector rebuilds it from the start, then switches."""

    revision = 2


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    server = Prometheus(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def true_lag(bootstrap: str, aggregate: str, partitions: int) -> dict[str, int]:
    """End offset minus the handlers' committed offset, per commands partition, straight from Kafka."""
    topic = TopicNames(aggregate).commands
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": handler_group(aggregate)})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        out = {}
        for tp in committed:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            out[str(tp.partition)] = high - max(tp.offset, 0)
        return out
    finally:
        consumer.close()


def test_dashboards_and_alerts_against_a_real_prometheus(
    kafka_bootstrap, invoices_aggregate, start_projector, prometheus, tmp_path
):
    cls = invoices_aggregate(partitions=3)
    agg = cls.name
    names = TopicNames(agg)
    handlers: dict[str, HandlerProcess] = {}

    def run_handler(pod: str) -> None:
        port = free_port()
        handlers[pod] = start_handler(
            kafka_bootstrap, aggregate_path(cls), tmp_path / pod, pod, tmp_path, extra_env=LOOPBACK, http_port=port
        )
        prometheus.scrape(pod, port)

    def run_projector(view: str, pod: str) -> subprocess.Popen[bytes]:
        port = free_port()
        proc = start_projector(
            view,
            f"sqlite:///{tmp_path / 'views.db'}",
            aggregate_name=agg,
            name=pod,
            extra_env={**LOOPBACK, "FOLDLINE_HTTP_PORT": str(port)},
        )
        prometheus.scrape(pod, port)
        return proc

    gateway = Gateway(
        [AggregateSpec(cls())], gateway_settings(kafka_bootstrap, command_timeout_s=30.0, max_command_timeout_s=60.0)
    )
    try:
        with GatewayServer(gateway) as server, httpx.Client(base_url=server.url, timeout=60) as client:
            prometheus.scrape("gateway", int(server.url.rsplit(":", 1)[1]))
            run_handler("handler-a")
            run_projector(f"{VIEWS}:InvoiceList", "projector-r1")

            def submit(prefix: str, n: int) -> None:
                for i in range(n):
                    body = {"aggregate_id": f"{prefix}-{i}", "type": "CreateInvoice", "payload": CREATE}
                    r = client.post(f"/aggregates/{agg}/commands", json=body)
                    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text

            submit("first", 12)

            # Before the poison record: the dead-letter series exist at 0 (so increase() will see the first).
            wait_until(lambda: prometheus.query(f'foldline_dead_letters_total{{aggregate="{agg}"}}'), 30, "series")
            at = prometheus.steady_instant({"gateway", "handler-a"})
            assert prometheus.value(f'sum(foldline_dead_letters_total{{aggregate="{agg}"}})', at) == 0
            send(kafka_bootstrap, names.commands, [(b"poison-1", b"\xff this is no command")])
            dead = f'sum(increase(foldline_dead_letters_total{{aggregate="{agg}", code="undecodable"}}[5m]))'
            wait_until(lambda: (prometheus.scalar(dead) or 0) >= 0.9, 60, "the dead letter to be counted")

            # A rebalance: a second handler joins (each takes partitions), commands flow to both, it leaves.
            run_handler("handler-b")
            per_pod = f'foldline_assigned_partitions{{aggregate="{agg}"}} > 0'
            wait_until(lambda: len(prometheus.query(per_pod)) == 2, 90, "both handlers to own partitions")
            submit("second", 30)  # keys on every partition, so both handlers measure lag
            lag_series = f'foldline_consumer_lag{{aggregate="{agg}"}}'

            def every_partition_measured_once(at: float) -> bool:
                owners = prometheus.query(f"count by (partition) ({lag_series})", at)
                return len(owners) == 3 and all(float(o["value"][1]) == 1 for o in owners)

            # The fix under test: a revoked partition's lag leaves its old owner, so once both handlers
            # export lag no partition is exported twice (handler-a used to keep its pre-rebalance values).
            def exporting() -> set[str]:
                return {s["metric"]["pod"] for s in prometheus.query(lag_series)}

            wait_until(lambda: exporting() == {"handler-a", "handler-b"}, 60, "both handlers to export lag")
            at = prometheus.steady_instant({"handler-a", "handler-b"})
            assert every_partition_measured_once(at), prometheus.query(lag_series, at)
            assert handlers["handler-b"].terminate() == 0
            prometheus.forget("handler-b")
            wait_until(
                lambda: prometheus.scalar(f'sum(foldline_assigned_partitions{{aggregate="{agg}"}})') == 3,
                90,
                "handler-a to own every partition again",
            )
            submit("third", 6)

            # A rebuild: revision 2 reads the source from the start and switches; revision 1 retires.
            run_projector(f"tests.integration.test_observability:{InvoiceListR2.__name__}", "projector-r2")
            progress = f'foldline_projection_rebuild_progress_ratio{{aggregate="{agg}", revision="2"}}'
            wait_until(lambda: prometheus.query(f"{progress} == 1"), 120, "revision 2 to switch")

            # After the rebalance the exported lag is the true lag, partition by partition.
            def lag_matches() -> bool:
                exported = {s["metric"]["partition"]: int(float(s["value"][1])) for s in prometheus.query(lag_series)}
                return exported == true_lag(kafka_bootstrap, agg, 3)

            wait_until(lag_matches, 60, "the exported lag to equal the true lag")
            time.sleep(3)  # a few more scrapes and rule evaluations
            # Every check from here reads one instant at which each process still running had just been
            # scraped (a query "now" misses every series of a target whose last scrape timed out).
            at = prometheus.steady_instant({"gateway", "handler-a", "projector-r2"})
            assert prometheus.value(f"sum({lag_series})", at) == sum(true_lag(kafka_bootstrap, agg, 3).values())
            check_metrics_lint(prometheus, at)
            check_panels(prometheus, agg, at)
            check_alerts(prometheus, agg, at)
            check_variables(prometheus)

            # The values the test knows.
            panel = dict(((d, t), e) for d, t, e in panel_queries() if d == "foldline-aggregates.json")
            dead_letters = prometheus.query(fill(panel["foldline-aggregates.json", "Dead letters (last 5m)"], agg), at)
            by_code = {s["metric"]["code"]: float(s["value"][1]) for s in dead_letters}
            assert abs(by_code.pop("undecodable") - 1) < 0.1 and set(by_code.values()) == {0.0}
            rebalances = fill(panel["foldline-aggregates.json", "Rebalances (last 5m)"], agg)
            kinds = {s["metric"]["kind"]: float(s["value"][1]) for s in prometheus.query(rebalances, at)}
            # handler-a gave partitions to b and took them back (its first assignment may precede the first
            # scrape); b's series left with b. Each kind is there from the start.
            assert kinds["revoked"] >= 1 and kinds["assigned"] >= 1 and "lost" in kinds
            restores = f'sum(foldline_store_restore_seconds_count{{aggregate="{agg}"}})'
            assert prometheus.value(restores, at) >= 4
            assert prometheus.value(f'sum(foldline_store_restoring_partitions{{aggregate="{agg}"}})', at) == 0
    finally:
        for proc in handlers.values():
            if proc.alive():
                proc.terminate()


def check_metrics_lint(prometheus: Prometheus, at: float) -> None:
    """``promtool check metrics`` on the /metrics of every process still being scraped."""
    up = {s["metric"]["pod"]: s["metric"]["instance"] for s in prometheus.query("up == 1", at)}
    assert {"gateway", "handler-a", "projector-r2"} <= set(up)
    for pod, address in up.items():
        text = httpx.get(f"http://{address}/metrics", timeout=10).content
        done = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, timeout=60, check=False
        )
        assert done.returncode == 0, f"{pod}: {done.stdout.decode()}{done.stderr.decode()}"


def check_panels(prometheus: Prometheus, agg: str, at: float) -> None:
    empty = []
    for board, title, expr in panel_queries():
        result = prometheus.query(fill(expr, agg), at)  # asserts that it parses and evaluates
        if not result and not NOT_EXERCISED.search(expr):
            empty.append(f"{board} / {title}: {expr}")
    assert not empty, "panels without data:\n" + "\n".join(empty)


def check_alerts(prometheus: Prometheus, agg: str, at: float) -> None:
    rules = prometheus.http.get("/api/v1/rules").json()["data"]["groups"]
    loaded = {rule["name"]: rule for group in rules for rule in group["rules"]}
    assert set(loaded) == {rule["alert"] for rule in alert_rules()}
    for rule in alert_rules():
        assert loaded[rule["alert"]]["health"] == "ok", loaded[rule["alert"]]
        prometheus.query(rule["expr"])  # parses and evaluates through the HTTP API
        for metric in set(re.findall(r"\bfoldline_[a-z_]+", rule["expr"])):
            if not NOT_EXERCISED.search(metric):
                assert prometheus.query(f"count({metric})", at), f"{rule['alert']}: no {metric} scraped"
    firing = [
        a["labels"]
        for a in prometheus.http.get("/api/v1/alerts").json()["data"]["alerts"]
        if a["state"] == "firing" and a["labels"]["alertname"] == "FoldlineDeadLetters"
    ]
    assert [(a["aggregate"], a["code"]) for a in firing] == [(agg, "undecodable")]


def check_variables(prometheus: Prometheus) -> None:
    for board, selector, label in variable_queries():
        values = prometheus.http.get(f"/api/v1/label/{label}/values", params={"match[]": fill(selector, ".*")}).json()
        assert values["status"] == "success" and values["data"], f"{board}: {selector} has no {label}"


def test_a_new_owner_reports_its_whole_backlog_as_lag(kafka_bootstrap, invoices_aggregate, tmp_path):
    """Right after an assignment, partitions this handler has not committed a batch for yet count from
    their committed offset: the summed lag is the true lag (it used to leave such partitions out)."""
    cls = invoices_aggregate(partitions=3)
    send(
        kafka_bootstrap, TopicNames(cls.name).commands, [command(f"i-{i}", "CreateInvoice", CREATE) for i in range(60)]
    )
    settings = HandlerSettings(
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap),
        state_dir=tmp_path / "state",
        instance_id="lag",
        max_batch=1,  # one command a transaction: the other partitions wait with their backlog
        commit_interval_ms=20,
    )
    handler = build_command_handler(AggregateSpec(cls()), settings)
    for producer in handler.producers:  # with FOLDLINE_TXN_PRODUCERS=2 they take turns
        producer.init_transactions(60.0)
    handler.group.subscribe()  # driven from this thread, which owns the consumer and the producer
    try:
        processed = 0
        deadline = time.monotonic() + 60
        while (processed == 0 or len(handler.tasks) < 3) and time.monotonic() < deadline:
            processed += handler.poll_once()
        assert len(handler.tasks) == 3 and 1 <= processed < 60
        expected = {int(p): n for p, n in true_lag(kafka_bootstrap, cls.name, 3).items()}
        assert sum(expected.values()) == 60 - processed
        wait_until(lambda: len(handler.lag()) == 3, 30, "watermarks of every partition")
        assert handler.lag() == expected
    finally:
        handler.close()
