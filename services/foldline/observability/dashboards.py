"""The Grafana dashboards of the Helm chart, as code: ``python -m foldline.observability.dashboards --write``.

The JSON under ``charts/foldline/dashboards`` is generated from here with Grafana's own typed builders
(``grafana-foundation-sdk``, Grafana's dashboard schema; the ``dev`` extra: this is a build step, no
process imports it at run time). A unit test checks for drift, so every panel filters by the same
``namespace``/``pod`` variables and queries only exported metrics.
Counters are shown with ``increase()`` where a person counts events (dead letters, rebalances) and with
``rate()`` where they read throughput.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as models

_DS = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
_ALL_FOLDLINE = '{__name__=~"foldline_.+"'


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    targets: tuple[Target, ...]


def _sel(with_aggregate: bool, extra: str = "") -> str:
    parts = ['namespace=~"$namespace"', 'pod=~"$pod"']
    if with_aggregate:
        parts.append('aggregate=~"$aggregate"')
    if extra:
        parts.append(extra)
    return "{" + ", ".join(parts) + "}"


A = _sel(True)
A5XX = _sel(True, 'status=~"5.."')
OP = _sel(False)


def _p(title: str, unit: str, *targets: tuple[str, str]) -> Panel:
    return Panel(title, unit, tuple(Target(expr, legend) for expr, legend in targets))


def _quantile(q: float, metric: str, by: str, sel: str, window: str = "5m") -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{sel}[{window}])))"


AGGREGATES = (
    _p(
        "Commands by result",
        "ops",
        (f"sum by (aggregate, status) (rate(foldline_commands_total{A}[5m]))", "{{aggregate}} {{status}}"),
    ),
    _p(
        "Command latency p50 / p99",
        "s",
        (_quantile(0.5, "foldline_command_latency_seconds", "aggregate", A), "{{aggregate}} p50"),
        (_quantile(0.99, "foldline_command_latency_seconds", "aggregate", A), "{{aggregate}} p99"),
    ),
    _p(
        "Transaction duration p99",
        "s",
        (_quantile(0.99, "foldline_transaction_duration_seconds", "aggregate", A), "{{aggregate}}"),
    ),
    _p(
        "Commands per transaction (mean)",
        "short",
        (
            f"sum by (aggregate) (rate(foldline_batch_commands_sum{A}[5m])) / "
            f"sum by (aggregate) (rate(foldline_batch_commands_count{A}[5m]))",
            "{{aggregate}}",
        ),
    ),
    _p("Events written", "ops", (f"sum by (aggregate) (rate(foldline_events_written_total{A}[5m]))", "{{aggregate}}")),
    _p("Consumer lag (commands)", "short", (f"sum by (aggregate) (foldline_consumer_lag{A})", "{{aggregate}}")),
    _p(
        "Consumer lag by partition",
        "short",
        (f"max by (aggregate, partition) (foldline_consumer_lag{A})", "{{aggregate}} p{{partition}}"),
    ),
    _p(
        "Dead letters (last 5m)",
        "short",
        (f"sum by (aggregate, code) (increase(foldline_dead_letters_total{A}[5m]))", "{{aggregate}} {{code}}"),
    ),
    _p(
        "Aborted transactions (last 5m)",
        "short",
        (f"sum by (aggregate) (increase(foldline_transactions_aborted_total{A}[5m]))", "{{aggregate}}"),
    ),
    _p(
        "Rebalances (last 5m)",
        "short",
        (f"sum by (aggregate, kind) (increase(foldline_rebalances_total{A}[5m]))", "{{aggregate}} {{kind}}"),
    ),
    _p("Assigned partitions", "short", (f"sum by (aggregate) (foldline_assigned_partitions{A})", "{{aggregate}}")),
    _p(
        "Store restore time p99",
        "s",
        (_quantile(0.99, "foldline_store_restore_seconds", "aggregate", A, "15m"), "{{aggregate}}"),
    ),
    _p(
        "Restores in progress",
        "short",
        (f"sum by (aggregate) (foldline_store_restoring_partitions{A})", "{{aggregate}} partitions"),
        (f"sum by (aggregate) (foldline_store_restore_remaining_records{A})", "{{aggregate}} records left"),
    ),
    _p(
        "Store size and restored snapshots",
        "short",
        (f"sum by (aggregate) (foldline_store_keys{A})", "{{aggregate}} keys"),
        (f"sum by (aggregate) (rate(foldline_store_restored_records_total{A}[5m]))", "{{aggregate}} restored/s"),
    ),
)

READS = (
    _p("Projection lag", "short", (f"max by (aggregate, projection) (foldline_projection_lag{A})", "{{projection}}")),
    _p(
        "Projection lag by partition",
        "short",
        (
            f"max by (aggregate, projection, partition) (foldline_projection_partition_lag{A})",
            "{{projection}} p{{partition}}",
        ),
    ),
    _p(
        "Rebuild progress",
        "percentunit",
        (
            f"max by (aggregate, projection, revision) (foldline_projection_rebuild_progress_ratio{A})",
            "{{projection}} r{{revision}}",
        ),
    ),
    _p(
        "Rows written",
        "ops",
        (f"sum by (aggregate, projection) (rate(foldline_projection_rows_written_total{A}[5m]))", "{{projection}}"),
    ),
    _p(
        "Records applied",
        "ops",
        (f"sum by (aggregate, projection) (rate(foldline_projection_records_total{A}[5m]))", "{{projection}}"),
    ),
    _p(
        "Skipped records (last 5m)",
        "short",
        (
            f"sum by (aggregate, projection, reason) (increase(foldline_projection_records_skipped_total{A}[5m]))",
            "{{projection}} {{reason}}",
        ),
    ),
    _p(
        "Projector batch p99",
        "s",
        (_quantile(0.99, "foldline_projection_batch_seconds", "projection", A), "{{projection}}"),
    ),
    _p(
        "Gateway requests",
        "reqps",
        (f"sum by (route, status) (rate(foldline_gateway_requests_total{A}[5m]))", "{{route}} {{status}}"),
    ),
    _p(
        "Gateway 5xx share",
        "percentunit",
        (
            f"sum by (aggregate) (rate(foldline_gateway_requests_total{A5XX}[5m])) / "
            f"sum by (aggregate) (rate(foldline_gateway_requests_total{A}[5m]))",
            "{{aggregate}}",
        ),
    ),
    _p("Gateway latency p99", "s", (_quantile(0.99, "foldline_gateway_request_seconds", "route", A), "{{route}}")),
)

OPERATOR = (
    _p(
        "Reconciliations by result",
        "ops",
        (f"sum by (kind, result) (rate(foldline_operator_reconciles_total{OP}[5m]))", "{{kind}} {{result}}"),
    ),
    _p("Reconcile duration p99", "s", (_quantile(0.99, "foldline_operator_reconcile_seconds", "kind", OP), "{{kind}}")),
    _p(
        "Errors by reason",
        "short",
        (f"sum by (kind, reason) (increase(foldline_operator_errors_total{OP}[15m]))", "{{kind}} {{reason}}"),
    ),
    _p(
        "Resources Ready (1) / not Ready (0)",
        "short",
        (
            f"min by (kind, resource_namespace, resource_name) (foldline_operator_resource_ready{OP})",
            "{{kind}} {{resource_namespace}}/{{resource_name}}",
        ),
    ),
    _p(
        "Lag seen by the operator",
        "short",
        (
            f"max by (kind, resource_namespace, resource_name) (foldline_operator_resource_lag{OP})",
            "{{kind}} {{resource_namespace}}/{{resource_name}}",
        ),
    ),
)


def _query_var(name: str, label: str, query: str) -> db.QueryVariable:
    return (
        db.QueryVariable(name)
        .label(label)
        .datasource(_DS)
        .query(query)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
    )


def _variables(aggregate_metric: str | None) -> list[db.QueryVariable | db.DatasourceVariable]:
    out: list[db.QueryVariable | db.DatasourceVariable] = [
        db.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        _query_var("namespace", "Namespace", f"label_values({_ALL_FOLDLINE}}}, namespace)"),
        _query_var("pod", "Pod", f'label_values({_ALL_FOLDLINE}, namespace=~"$namespace"}}, pod)'),
    ]
    if aggregate_metric is not None:
        selector = f'{{__name__=~"{aggregate_metric}", namespace=~"$namespace"}}'
        out.append(_query_var("aggregate", "Aggregate", f"label_values({selector}, aggregate)"))
    return out


def dashboard(uid: str, title: str, panels: Sequence[Panel], aggregate_metric: str | None) -> dict[str, Any]:
    """One dashboard as Grafana's JSON model: two panels a row, laid out by the builder."""
    board = db.Dashboard(title).uid(uid).tags(["foldline"]).time("now-1h", "now").refresh("30s").editable()
    for variable in _variables(aggregate_metric):
        board = board.with_variable(variable)
    for panel in panels:
        built = timeseries.Panel().title(panel.title).datasource(_DS).unit(panel.unit).span(12).height(8)
        for j, target in enumerate(panel.targets):
            query = prometheus.Dataquery().expr(target.expr).legend_format(target.legend).ref_id(chr(ord("A") + j))
            built = built.with_target(query)
        board = board.with_panel(built)
    encoded: dict[str, Any] = _without_nulls(json.loads(json.dumps(board.build(), cls=JSONEncoder)))
    return encoded


def _without_nulls(value: Any) -> Any:
    """Unset fields (the SDK writes ``"options": null``) left out, so Grafana applies its defaults."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def dashboards() -> dict[str, dict[str, Any]]:
    """File name → dashboard JSON object."""
    return {
        "foldline-aggregates.json": dashboard(
            "foldline-aggregates", "foldline / aggregates", AGGREGATES, "foldline_assigned_partitions"
        ),
        "foldline-reads.json": dashboard(
            "foldline-reads",
            "foldline / projections and gateway",
            READS,
            "foldline_projection_records_total|foldline_gateway_request_seconds_count",
        ),
        "foldline-operator.json": dashboard("foldline-operator", "foldline / operator", OPERATOR, None),
    }


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, nargs="?", const=Path("charts/foldline/dashboards"), default=None)
    args = parser.parse_args(argv)
    for name, board in dashboards().items():
        if args.write is None:
            print(render(board), end="")
        else:
            (args.write / name).write_text(render(board))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
