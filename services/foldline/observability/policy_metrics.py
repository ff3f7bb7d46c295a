"""The policy worker's metrics, served on its ``/metrics`` with every other foldline metric.

Counters are created at 0 when the worker starts (see ``series``: a series born on its first increment is
invisible to ``rate()`` for that event); the per-partition gauges leave with their partition, so a revoked
partition's lag or deadlines are never summed with the new owner's.
"""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge

EVENTS = Counter("foldline_policy_events_total", "Source events a policy handled", ["policy", "source"])
COMMANDS = Counter(
    "foldline_policy_commands_emitted_total", "Commands a policy committed (deadlines fired included)", ["policy"]
)
DEAD_LETTERS = Counter(
    "foldline_policy_dead_letters_total", "Source events a policy dead-lettered, by cause", ["policy", "code"]
)
DEADLINES_FIRED = Counter("foldline_policy_deadlines_fired_total", "Deadlines that fired", ["policy"])
TRANSACTIONS_ABORTED = Counter("foldline_policy_transactions_aborted_total", "Aborted transactions", ["policy"])
KAFKA_RECOVERIES = Counter(
    "foldline_policy_kafka_recoveries_total",
    "Times a policy worker rebuilt its Kafka clients after a broker outage or a failed or fenced client",
    ["policy", "cause"],
)
DEADLINES_SCHEDULED = Gauge(
    "foldline_policy_deadlines_scheduled",
    "Deadlines pending in this worker's partitions",
    ["policy", "source", "partition"],
)
LAG = Gauge(
    "foldline_policy_consumer_lag",
    "Source events behind the end of the partition (read_committed)",
    ["policy", "source", "partition"],
)
ASSIGNED_PARTITIONS = Gauge("foldline_policy_assigned_partitions", "Source partitions this worker owns", ["policy"])

#: The codes ``foldline.policy.task`` dead-letters with.
DEAD_LETTER_CODES = ("undecodable", "react_failed")


def policy_started(policy: str, sources: list[str]) -> None:
    for source in sources:
        EVENTS.labels(policy, source)
    for code in DEAD_LETTER_CODES:
        DEAD_LETTERS.labels(policy, code)
    COMMANDS.labels(policy)
    DEADLINES_FIRED.labels(policy)
    TRANSACTIONS_ABORTED.labels(policy)
    for cause in ("failed", "fenced"):
        KAFKA_RECOVERIES.labels(policy, cause)
    ASSIGNED_PARTITIONS.labels(policy).set(0)


def policy_partition_gone(policy: str, source: str, partition: int) -> None:
    for gauge in (DEADLINES_SCHEDULED, LAG):
        with contextlib.suppress(KeyError):  # never measured
            gauge.remove(policy, source, str(partition))
