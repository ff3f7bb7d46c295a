"""Which labelled series exist when: created at 0 at start, removed when their partition or resource goes.

A counter series born on its first increment is invisible to ``rate()``/``increase()`` for that first
event (there is no earlier sample to compare with), so the first dead letter, rebalance or restore of a
process would read 0 on a dashboard. Every series a panel or an alert uses is therefore created at start
for the label values known then. Per-partition gauges leave with their partition: a handler that kept
exporting a revoked partition's lag would be summed with the new owner's and freeze at a stale value.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from foldline.errors import CommandError, DecodeError, UnknownTypeError, ValidationError
from foldline.observability import metrics
from foldline.records import Status

#: Codes a command handler dead-letters with (an aggregate's own CommandError codes appear on first use).
DEAD_LETTER_CODES = (
    CommandError.code,
    DecodeError.code,
    UnknownTypeError.code,
    ValidationError.code,
    "decide_failed",
)
REBALANCE_KINDS = ("assigned", "revoked", "lost")
SKIP_REASONS = ("undecodable", "project_failed", "refused_by_database")
#: Statuses a gateway alert watches; other statuses appear on first use.
GATEWAY_ALERT_STATUSES = ("500", "503", "504")
RECONCILE_RESULTS = ("ready", "not_ready", "paused", "error")


def _remove(metric: Any, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never created (the partition left before its first measurement)
        metric.remove(*labels)


# -- command handler -------------------------------------------------------------------------------------
def handler_started(aggregate: str) -> None:
    for status in Status:
        metrics.COMMANDS.labels(aggregate, status.value)
    for code in DEAD_LETTER_CODES:
        metrics.DEAD_LETTERS.labels(aggregate, code)
    for kind in REBALANCE_KINDS:
        metrics.REBALANCES.labels(aggregate, kind)
    metrics.TRANSACTIONS_ABORTED.labels(aggregate)
    metrics.EVENTS_WRITTEN.labels(aggregate)
    metrics.RESTORED_RECORDS.labels(aggregate)
    metrics.RESTORE_SECONDS.labels(aggregate)
    metrics.RESTORING_PARTITIONS.labels(aggregate).set(0)
    metrics.ASSIGNED_PARTITIONS.labels(aggregate).set(0)
    metrics.STANDBY_PARTITIONS.labels(aggregate).set(0)
    for histogram in (metrics.COMMAND_LATENCY, metrics.TRANSACTION_DURATION, metrics.BATCH_SIZE):
        histogram.labels(aggregate)


def handler_partition_gone(aggregate: str, group: str, partition: int) -> None:
    p = str(partition)
    _remove(metrics.CONSUMER_LAG, aggregate, group, p)
    _remove(metrics.STORE_KEYS, aggregate, p)
    _remove(metrics.RESTORE_REMAINING, aggregate, p)


def standby_partition_gone(aggregate: str, partition: int) -> None:
    p = str(partition)
    _remove(metrics.STANDBY_LAG, aggregate, p)
    _remove(metrics.STANDBY_RECORDS, aggregate, p)


# -- projector -------------------------------------------------------------------------------------------
def projector_started(aggregate: str, view: str) -> None:
    for reason in SKIP_REASONS:
        metrics.PROJECTION_RECORDS_SKIPPED.labels(aggregate, view, reason)
    metrics.PROJECTION_ROWS.labels(aggregate, view)
    metrics.PROJECTION_RECORDS.labels(aggregate, view)
    metrics.PROJECTION_BATCH_SECONDS.labels(aggregate, view)


def projector_partition_gone(aggregate: str, view: str, partition: int) -> None:
    _remove(metrics.PROJECTION_PARTITION_LAG, aggregate, view, str(partition))


# -- gateway ---------------------------------------------------------------------------------------------
def gateway_started(aggregates: Iterable[str], routes: Iterable[str]) -> None:
    names = list(routes)
    for aggregate in aggregates:
        for route in names:
            metrics.GATEWAY_LATENCY.labels(aggregate, route)
            for status in GATEWAY_ALERT_STATUSES:
                metrics.GATEWAY_REQUESTS.labels(aggregate, route, status)


# -- operator --------------------------------------------------------------------------------------------
def operator_started(kinds: Iterable[str]) -> None:
    for kind in kinds:
        metrics.OPERATOR_RECONCILE_SECONDS.labels(kind)
        for result in RECONCILE_RESULTS:
            metrics.OPERATOR_RECONCILES.labels(kind, result)


def operator_resource(kind: str, namespace: str, name: str, *, ready: bool, lag: int | None) -> None:
    metrics.OPERATOR_RESOURCE_READY.labels(kind, namespace, name).set(1 if ready else 0)
    if lag is None:
        _remove(metrics.OPERATOR_RESOURCE_LAG, kind, namespace, name)
    else:
        metrics.OPERATOR_RESOURCE_LAG.labels(kind, namespace, name).set(lag)


def operator_resource_gone(kind: str, namespace: str, name: str) -> None:
    _remove(metrics.OPERATOR_RESOURCE_READY, kind, namespace, name)
    _remove(metrics.OPERATOR_RESOURCE_LAG, kind, namespace, name)
