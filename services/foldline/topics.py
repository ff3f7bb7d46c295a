"""An aggregate's topics: their names and configs, created or checked; the operator calls this too.

Partition counts are never changed silently: fewer partitions cannot be had in Kafka at all, and more
partitions remap keys (an aggregate's new commands would land on a partition whose store lacks it),
so growth needs ``allow_partition_growth=True``, which the operator takes from an explicit opt-in.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

from foldline.errors import BrokerUnavailableError, TopicMismatchError

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicNames:
    """The five topics of one aggregate."""

    aggregate: str

    @property
    def commands(self) -> str:
        return f"{self.aggregate}.commands"

    @property
    def results(self) -> str:
        return f"{self.aggregate}.command-results"

    @property
    def events(self) -> str:
        return f"{self.aggregate}.events"

    @property
    def snapshots(self) -> str:
        return f"{self.aggregate}.snapshots"

    @property
    def dead_letters(self) -> str:
        return f"{self.aggregate}.dead-letters"

    def all(self) -> tuple[str, ...]:
        return (self.commands, self.results, self.events, self.snapshots, self.dead_letters)


@dataclass(frozen=True)
class PolicyTopics:
    """The topics a policy owns: a compacted state changelog per source aggregate, and its dead letters.

    A state topic has as many partitions as its source's events topic: state partition p holds the
    state of the aggregates whose events are on events partition p.
    """

    policy: str

    def state(self, source: str) -> str:
        return f"policy.{self.policy}.{source}.state"

    @property
    def dead_letters(self) -> str:
        return f"policy.{self.policy}.dead-letters"


def policy_topics(
    policy: str,
    source_partitions: Mapping[str, int],
    replication_factor: int = 1,
    retention: Retention | None = None,
) -> list[TopicSpec]:
    """The specs of a policy's topics, given each source aggregate's partition count."""
    r = retention or Retention()
    names = PolicyTopics(policy)
    specs = [
        TopicSpec(
            names.state(source),
            partitions,
            replication_factor,
            {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"},
        )
        for source, partitions in source_partitions.items()
    ]
    specs.append(
        TopicSpec(
            names.dead_letters,
            max(source_partitions.values(), default=1),
            replication_factor,
            {"cleanup.policy": "delete", "retention.ms": str(r.dead_letters_ms)},
        )
    )
    return specs


# -- consumer groups ------------------------------------------------------------------------------------
def handler_group(aggregate: str) -> str:
    """The consumer group of an aggregate's command handlers (offsets commit inside its transactions)."""
    return f"foldline.{aggregate}.command-handler"


def policy_group(policy: str) -> str:
    """The consumer group of a policy's workers (offsets commit inside their transactions)."""
    return f"foldline.policy.{policy}"


def policy_restore_group(policy: str) -> str:
    """The group id of a policy worker's restore consumer: never joined, never committed."""
    return policy_group(policy) + ".restore"


def restore_group(aggregate: str) -> str:
    """The group id of the handlers' restore consumers: never joined, never committed."""
    return handler_group(aggregate) + ".restore"


def projector_group(aggregate: str, view: str, revision: int) -> str:
    """The consumer group of one view revision: used to share partitions, never to commit offsets."""
    return f"foldline.{aggregate}.projection.{view}.r{revision}"


#: The group id of ``foldline projection status`` and the operator's end-offset reads (never joined).
STATUS_GROUP = "foldline.projection-status"


def private_group(purpose: str) -> str:
    """A group id of its own for a reader that assigns partitions by hand (gateway results, ``tail``)."""
    return f"foldline.{purpose}.{uuid.uuid4().hex}"


def progress(positions: Mapping[int, int], ends: Mapping[int, tuple[int, int]]) -> tuple[int, float]:
    """Records behind and the share read (0..1) of a reader, from its positions and (low, end) offsets."""
    behind, total, done = 0, 0, 0
    for p, (low, end) in ends.items():
        pos = min(max(positions.get(p, low), low), end)
        behind += end - pos
        total += end - low
        done += pos - low
    return behind, (done / total if total else 1.0)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str]


@dataclass(frozen=True)
class Retention:
    """Retention of the topics that are not kept forever, in milliseconds."""

    commands_ms: int = 7 * DAY_MS
    results_ms: int = 3600 * 1000
    dead_letters_ms: int = 30 * DAY_MS


@dataclass
class TopicReport:
    created: list[str] = field(default_factory=list)
    grown: list[str] = field(default_factory=list)
    reconfigured: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    #: Existing topics whose replication factor differs from the declared one, with the one they have:
    #: reported, never changed here (that is a partition reassignment, an operator's decision).
    replication: dict[str, int] = field(default_factory=dict)


def aggregate_topics(
    aggregate: str,
    partitions: int,
    replication_factor: int = 1,
    retention: Retention | None = None,
    min_insync_replicas: int | None = None,
) -> list[TopicSpec]:
    """The specs of an aggregate's topics: equal partition counts, so they are co-partitioned."""
    if partitions < 1:
        raise TopicMismatchError(f"partitions must be at least 1, got {partitions}")
    if replication_factor < 1:
        raise TopicMismatchError(f"replication factor must be at least 1, got {replication_factor}")
    r = retention or Retention()
    names = TopicNames(aggregate)
    common: dict[str, str] = {}
    if min_insync_replicas is not None:
        common["min.insync.replicas"] = str(min_insync_replicas)
    forever = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
    configs = {
        names.commands: {"cleanup.policy": "delete", "retention.ms": str(r.commands_ms)},
        names.results: {"cleanup.policy": "delete", "retention.ms": str(r.results_ms)},
        names.events: forever,
        # The snapshots topic is the state store's changelog: only the latest value per key matters.
        names.snapshots: {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"},
        names.dead_letters: {"cleanup.policy": "delete", "retention.ms": str(r.dead_letters_ms)},
    }
    return [TopicSpec(name, partitions, replication_factor, {**common, **cfg}) for name, cfg in configs.items()]


def _admin(admin_or_config: AdminClient | Mapping[str, Any]) -> AdminClient:
    if isinstance(admin_or_config, AdminClient):
        return admin_or_config
    return AdminClient(dict(admin_or_config))


#: Broker answers that retrying cannot fix: the declaration itself is refused (``TopicMismatchError``
#: with this reason), not an unreachable Kafka.
_REFUSED = {
    29: "KafkaAuthorizationFailed",  # TOPIC_AUTHORIZATION_FAILED
    31: "KafkaAuthorizationFailed",  # CLUSTER_AUTHORIZATION_FAILED
    37: "InvalidPartitions",
    38: "InvalidReplicationFactor",  # e.g. more replicas than brokers
    39: "InvalidReplicaAssignment",
    40: "InvalidTopicConfig",
    44: "PolicyViolation",
}


def _wait(futures: Mapping[Any, Any], what: str, timeout: float) -> list[Any]:
    """Wait for admin futures; returns the keys whose topic already existed (another caller won)."""
    existed = []
    for key, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.code() if error is not None else None
            if code == 36:  # TOPIC_ALREADY_EXISTS
                existed.append(key)
                continue
            if code in _REFUSED:
                raise TopicMismatchError(f"{what} {key} refused by Kafka: {exc}", reason=_REFUSED[code]) from exc
            raise BrokerUnavailableError(f"{what} {key} failed: {exc}") from exc
    return existed


def describe_replication(admin: AdminClient, names: Iterable[str], timeout: float = 15.0) -> dict[str, int]:
    """The replication factor (the fewest replicas of any partition) of the named topics that exist."""
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailableError(f"cannot read topic metadata: {exc}") from exc
    wanted = set(names)
    return {
        name: min((len(p.replicas) for p in topic.partitions.values()), default=0)
        for name, topic in metadata.topics.items()
        if name in wanted and topic.error is None
    }


def describe_partitions(admin: AdminClient, names: Iterable[str], timeout: float = 15.0) -> dict[str, int]:
    """Partition counts of the named topics that exist."""
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailableError(f"cannot read topic metadata: {exc}") from exc
    wanted = set(names)
    return {
        name: len(topic.partitions) for name, topic in metadata.topics.items() if name in wanted and topic.error is None
    }


def ensure_topics(
    admin_or_config: AdminClient | Mapping[str, Any],
    specs: list[TopicSpec],
    *,
    allow_partition_growth: bool = False,
    timeout: float = 30.0,
) -> TopicReport:
    """Create missing topics and check existing ones; idempotent.

    Raises ``TopicMismatchError`` (``reason`` says which) before changing anything when an existing
    topic has more partitions than declared, or fewer without ``allow_partition_growth``, or a
    different cleanup policy.
    """
    admin = _admin(admin_or_config)
    report = TopicReport()
    for _ in range(5):
        existing = describe_partitions(admin, (s.name for s in specs), timeout)
        current = _check(admin, specs, existing, allow_partition_growth, timeout)
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            break
        new = [NewTopic(s.name, s.partitions, s.replication_factor, config=dict(s.config)) for s in missing]
        raced = set(_wait(admin.create_topics(new, request_timeout=timeout), "creating topic", timeout))
        report.created.extend(s.name for s in missing if s.name not in raced)
        if not raced:  # if raced, the metadata was stale: check those topics again
            _await_metadata(admin, [s.name for s in missing], timeout)
            break
    else:
        raise BrokerUnavailableError("topic metadata kept disagreeing with topic creation")
    grow = [s for s in specs if s.name in existing and existing[s.name] < s.partitions]
    if grow:
        _wait(admin.create_partitions([NewPartitions(s.name, s.partitions) for s in grow]), "growing", timeout)
        report.grown.extend(s.name for s in grow)
    for spec in specs:
        if spec.name not in existing:
            continue
        drift = {k: v for k, v in spec.config.items() if current.get(spec.name, {}).get(k) != v}
        if drift:
            _alter_configs(admin, spec.name, drift, timeout)
            report.reconfigured.append(spec.name)
        elif spec.name not in report.grown:
            report.unchanged.append(spec.name)
    if existing:
        factors = describe_replication(admin, existing, timeout)
        report.replication = {
            s.name: factors[s.name] for s in specs if s.name in factors and factors[s.name] != s.replication_factor
        }
    return report


def _check(
    admin: AdminClient, specs: list[TopicSpec], existing: dict[str, int], allow_growth: bool, timeout: float
) -> dict[str, dict[str, str]]:
    """Refuse, before changing anything, what must not be done; returns the existing topics' configs."""
    for spec in specs:
        have = existing.get(spec.name)
        if have is None:
            continue
        if have > spec.partitions:
            raise _mismatch(
                "PartitionShrinkRefused",
                f"{spec.name} has {have} partitions; Kafka cannot shrink "
                f"a topic to {spec.partitions}. Declare {have} or more.",
            )
        if have < spec.partitions and not allow_growth:
            raise _mismatch(
                "PartitionGrowthRefused",
                f"{spec.name} has {have} partitions; growing to "
                f"{spec.partitions} remaps aggregate ids to other partitions and needs an explicit "
                "opt-in (allowPartitionGrowth)",
            )
    current = _describe_configs(admin, [s.name for s in specs if s.name in existing], timeout)
    for spec in specs:
        policy = current.get(spec.name, {}).get("cleanup.policy")
        if policy is not None and policy != spec.config.get("cleanup.policy", policy):
            raise _mismatch(
                "ConfigMismatch", f"{spec.name} has cleanup.policy={policy}, expected {spec.config['cleanup.policy']}"
            )
    return current


def _await_metadata(admin: AdminClient, names: list[str], timeout: float) -> None:
    """Wait until new topics show in metadata, so the next caller sees what was created."""
    deadline = time.monotonic() + timeout
    while len(describe_partitions(admin, names, timeout)) < len(names):
        if time.monotonic() > deadline:
            raise BrokerUnavailableError(f"created topics did not appear in metadata: {', '.join(names)}")
        time.sleep(0.1)


def _mismatch(reason: str, message: str) -> TopicMismatchError:
    return TopicMismatchError(message, reason=reason)


def _describe_configs(admin: AdminClient, names: list[str], timeout: float) -> dict[str, dict[str, str]]:
    if not names:
        return {}
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    out: dict[str, dict[str, str]] = {}
    try:
        for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
            entries = future.result(timeout=timeout)
            out[resource.name] = {k: str(e.value) for k, e in entries.items()}
    except KafkaException as exc:
        raise BrokerUnavailableError(f"cannot describe topic configs: {exc}") from exc
    return out


def _alter_configs(admin: AdminClient, name: str, config: Mapping[str, str], timeout: float) -> None:
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry

    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in config.items()]
    resource = ConfigResource(ConfigResource.Type.TOPIC, name, incremental_configs=entries)
    _wait(admin.incremental_alter_configs([resource]), "reconfiguring", timeout)


def delete_topics(
    admin_or_config: AdminClient | Mapping[str, Any], names: Iterable[str], timeout: float = 30.0
) -> list[str]:
    """Delete the named topics that exist; returns those deleted (a second call returns none)."""
    admin = _admin(admin_or_config)
    present = list(describe_partitions(admin, names, timeout))
    deleted = []
    for name, future in (admin.delete_topics(present, request_timeout=timeout) if present else {}).items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            # Metadata can still list a topic just deleted (by us or another caller): it is gone all the same.
            if error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                continue
            raise BrokerUnavailableError(f"deleting topic {name} failed: {exc}") from exc
        deleted.append(name)
    return deleted
