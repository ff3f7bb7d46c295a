"""foldline: event sourcing on Apache Kafka.

``state = fold(events, empty)``: declare an aggregate's commands, events and fold, and foldline runs
it exactly once on Kafka, projects it into tables, and serves it over HTTP; a ``Policy`` reacts to one
aggregate's events with commands for another, exactly once.
"""

from foldline.aggregate import STATE, Aggregate, AggregateSpec, Decision, Rejection, Upcaster, load_aggregate
from foldline.codec import from_json, to_json
from foldline.errors import (
    AggregateDefinitionError,
    BrokerUnavailableError,
    CommandError,
    CommandRejectedError,
    ConfigurationError,
    DecodeError,
    FoldlineError,
    KafkaAuthenticationError,
    KafkaFatalError,
    PermanentError,
    RetryableError,
    StoreCorruptedError,
    StoreUnavailableError,
    TopicMismatchError,
    UnknownTypeError,
    UnsupportedVersionError,
    ValidationError,
    VersionConflictError,
    WaitTimeoutError,
)
from foldline.ids import AggregateId, CommandId, Version
from foldline.partitioner import murmur2, partition_for
from foldline.policies import (
    Cancel,
    Emit,
    Happened,
    Policy,
    PolicySpec,
    Reaction,
    Schedule,
    load_policy,
    policy_command_id,
)
from foldline.records import CommandEnvelope, CommandResult, EventRecord, SnapshotRecord, Status
from foldline.schema import SchemaProblem, check_schema_file, compare_schemas, schema_of
from foldline.settings import HandlerSettings, KafkaSettings
from foldline.topics import Retention, TopicNames, aggregate_topics, delete_topics, ensure_topics

__version__ = "0.1.0"

__all__ = [
    "STATE",
    "Aggregate",
    "AggregateDefinitionError",
    "AggregateId",
    "AggregateSpec",
    "BrokerUnavailableError",
    "Cancel",
    "CommandEnvelope",
    "CommandError",
    "CommandId",
    "CommandRejectedError",
    "CommandResult",
    "ConfigurationError",
    "Decision",
    "DecodeError",
    "Emit",
    "EventRecord",
    "FoldlineError",
    "HandlerSettings",
    "Happened",
    "KafkaAuthenticationError",
    "KafkaFatalError",
    "KafkaSettings",
    "PermanentError",
    "Policy",
    "PolicySpec",
    "Reaction",
    "Rejection",
    "Retention",
    "RetryableError",
    "Schedule",
    "SchemaProblem",
    "SnapshotRecord",
    "Status",
    "StoreCorruptedError",
    "StoreUnavailableError",
    "TopicMismatchError",
    "TopicNames",
    "UnknownTypeError",
    "UnsupportedVersionError",
    "Upcaster",
    "ValidationError",
    "Version",
    "VersionConflictError",
    "WaitTimeoutError",
    "__version__",
    "aggregate_topics",
    "check_schema_file",
    "compare_schemas",
    "delete_topics",
    "ensure_topics",
    "from_json",
    "load_aggregate",
    "load_policy",
    "murmur2",
    "partition_for",
    "policy_command_id",
    "schema_of",
    "to_json",
]
