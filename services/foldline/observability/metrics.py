"""Every Prometheus metric foldline exports; all are named ``foldline_…`` and labelled by aggregate.

Dashboards and alerts in the Helm chart query exactly these names (tests check that), so rename with care.
Buckets are sized from what is measured: a reconcile pass takes tens of seconds, a restore minutes.
``foldline.observability.series`` creates the labelled series at 0 and removes a partition's series.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# One transaction, batch or request: milliseconds normally, up to the 60 s client timeouts when Kafka or a
# database is slow.
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# A command's age at commit includes the time it waited in a backlog: minutes after an outage.
_END_TO_END = (*_LATENCY, 120.0, 300.0, 600.0)
# An operator pass reads Kafka and the API server: ~23 s measured on a busy cluster, retries go longer.
_RECONCILE = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 300.0)

COMMANDS = Counter("foldline_commands_total", "Commands handled, by result status", ["aggregate", "status"])
COMMAND_LATENCY = Histogram(
    "foldline_command_latency_seconds",
    "From the command's record timestamp to its result being committed",
    ["aggregate"],
    buckets=_END_TO_END,
)
TRANSACTION_DURATION = Histogram(
    "foldline_transaction_duration_seconds",
    "Duration of one Kafka transaction (one batch)",
    ["aggregate"],
    buckets=_LATENCY,
)
BATCH_SIZE = Histogram(
    "foldline_batch_commands",
    "Commands per transaction",
    ["aggregate"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 20000),
)
EVENTS_WRITTEN = Counter("foldline_events_written_total", "Events committed to the events topic", ["aggregate"])
DEAD_LETTERS = Counter("foldline_dead_letters_total", "Records sent to the dead-letter topic", ["aggregate", "code"])
TRANSACTIONS_ABORTED = Counter("foldline_transactions_aborted_total", "Aborted Kafka transactions", ["aggregate"])
TRANSACTIONS_COMMITTED = Counter(
    "foldline_transactions_committed_total",
    "Committed Kafka transactions, by the transactional producer (0, 1: they take turns) that committed them",
    ["aggregate", "producer"],
)
RESTORE_SECONDS = Histogram(
    "foldline_store_restore_seconds",
    "Time to restore one partition's store from the changelog",
    ["aggregate"],
    buckets=(0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
RESTORED_RECORDS = Counter("foldline_store_restored_records_total", "Snapshots read during restore", ["aggregate"])
STORE_KEYS = Gauge("foldline_store_keys", "Aggregates held in the local store", ["aggregate", "partition"])
ASSIGNED_PARTITIONS = Gauge("foldline_assigned_partitions", "Command partitions owned by this process", ["aggregate"])
RESTORING_PARTITIONS = Gauge(
    "foldline_store_restoring_partitions", "Partitions whose store is being restored right now", ["aggregate"]
)
RESTORE_REMAINING = Gauge(
    "foldline_store_restore_remaining_records",
    "Changelog records a restoring partition has still to read (0 when it is done)",
    ["aggregate", "partition"],
)
STANDBY_PARTITIONS = Gauge(
    "foldline_standby_partitions", "Partitions this handler keeps a warm standby store of", ["aggregate"]
)
STANDBY_LAG = Gauge(
    "foldline_standby_lag",
    "Changelog records a standby store is behind the end of its snapshots partition",
    ["aggregate", "partition"],
)
STANDBY_RECORDS = Counter(
    "foldline_standby_records_total", "Snapshots copied into a standby store", ["aggregate", "partition"]
)
REBALANCES = Counter("foldline_rebalances_total", "Partitions assigned, revoked or lost", ["aggregate", "kind"])
KAFKA_RECOVERIES = Counter(
    "foldline_kafka_recoveries_total",
    "Times an engine rebuilt its Kafka clients after a broker outage or a failed client",
    ["engine", "aggregate", "cause"],
)
CONSUMER_LAG = Gauge(
    "foldline_consumer_lag", "Records behind the end of the input partition", ["aggregate", "group", "partition"]
)

PROJECTION_ROWS = Counter(
    "foldline_projection_rows_written_total", "Row changes written by a projector", ["aggregate", "projection"]
)
PROJECTION_RECORDS = Counter(
    "foldline_projection_records_total", "Records applied by a projector", ["aggregate", "projection"]
)
PROJECTION_RECORDS_SKIPPED = Counter(
    "foldline_projection_records_skipped_total",
    "Records a projector could not decode or project (logged, then passed over)",
    ["aggregate", "projection", "reason"],
)
PROJECTION_LAG = Gauge(
    "foldline_projection_lag", "Records the projection is behind its source", ["aggregate", "projection"]
)
PROJECTION_PARTITION_LAG = Gauge(
    "foldline_projection_partition_lag",
    "Records one source partition of the projection is behind",
    ["aggregate", "projection", "partition"],
)
PROJECTION_REBUILD_PROGRESS = Gauge(
    "foldline_projection_rebuild_progress_ratio",
    "Share of the source a rebuilding revision has read (0..1)",
    ["aggregate", "projection", "revision"],
)
PROJECTION_BATCH_SECONDS = Histogram(
    "foldline_projection_batch_seconds",
    "Duration of one projector batch",
    ["aggregate", "projection"],
    buckets=_LATENCY,
)

GATEWAY_REQUESTS = Counter(
    "foldline_gateway_requests_total", "HTTP requests by route and status", ["aggregate", "route", "status"]
)
GATEWAY_LATENCY = Histogram(
    "foldline_gateway_request_seconds", "HTTP request duration", ["aggregate", "route"], buckets=_LATENCY
)

OPERATOR_RECONCILES = Counter(
    "foldline_operator_reconciles_total", "Reconciliations by kind and result", ["kind", "result"]
)
OPERATOR_RECONCILE_SECONDS = Histogram(
    "foldline_operator_reconcile_seconds", "Duration of a reconciliation", ["kind"], buckets=_RECONCILE
)
OPERATOR_ERRORS = Counter(
    "foldline_operator_errors_total", "Reconciliation errors by kind and reason", ["kind", "reason"]
)
OPERATOR_RESOURCE_READY = Gauge(
    "foldline_operator_resource_ready",
    "1 when the resource's Ready condition is True after the last pass, else 0",
    ["kind", "resource_namespace", "resource_name"],
)
OPERATOR_RESOURCE_LAG = Gauge(
    "foldline_operator_resource_lag",
    "Consumer lag the operator measured for the resource (handlers' group, or the projection's)",
    ["kind", "resource_namespace", "resource_name"],
)
