"""The exceptions foldline raises, grouped by what the caller should do about them.

    FoldlineError
    ├── RetryableError      try again later: the broker or database is away, a wait timed out
    ├── CommandError        reject this one command: it can never succeed as sent
    └── PermanentError      stop and fix something: configuration, credentials, topics, code

Errors from client libraries (confluent-kafka, sqlite3, psycopg, lmdb) are wrapped into one of these
with the original chained as ``__cause__``.
"""

from __future__ import annotations

from typing import Any


class FoldlineError(Exception):
    """The root of every error foldline raises on purpose."""


# -- retry later -------------------------------------------------------------------------------------
class RetryableError(FoldlineError):
    """A transient failure: the same call may succeed later."""


class BrokerUnavailableError(RetryableError):
    """Kafka did not answer, or answered with a retriable error."""


class StoreUnavailableError(RetryableError):
    """A local state store or a projection database could not be reached."""


class WaitTimeoutError(RetryableError):
    """Waiting for a result, a version or a service took longer than allowed."""


# -- reject the command ------------------------------------------------------------------------------
class CommandError(FoldlineError):
    """The command cannot succeed as sent; the sender must change it.

    ``code`` is a stable machine-readable word that appears in results and dead letters.
    """

    code = "invalid_command"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class DecodeError(CommandError):
    """The bytes are not a record foldline can read (bad JSON, missing envelope fields)."""

    code = "undecodable"


class UnknownTypeError(CommandError):
    """The record names a command or event type the aggregate does not declare."""

    code = "unknown_type"


class ValidationError(CommandError):
    """The payload does not satisfy the declared fields and their rules."""

    code = "invalid_payload"


class UnsupportedVersionError(CommandError):
    """The command's ``schema_version`` is newer than the deployed code, or older without an upcaster."""

    code = "unsupported_version"


class VersionConflictError(CommandError):
    """``expected_version`` did not match the aggregate's current version."""

    code = "conflict"

    def __init__(self, message: str, *, expected: int, actual: int) -> None:
        super().__init__(message, details={"expected_version": expected, "actual_version": actual})
        self.expected = expected
        self.actual = actual


class CommandRejectedError(CommandError):
    """The domain refused the command; ``message`` is the domain's reason."""

    code = "rejected"


# -- fail permanently --------------------------------------------------------------------------------
class PermanentError(FoldlineError):
    """Retrying will not help: configuration, infrastructure or code must change."""


class ConfigurationError(PermanentError):
    """A setting is missing or invalid, or a required tool is absent."""


class KafkaAuthenticationError(ConfigurationError):
    """The broker refused this client: wrong credentials, an untrusted certificate, or a security protocol
    the listener does not speak. The message names the cause, never a secret."""


class TopicMismatchError(PermanentError):
    """Existing topics disagree with what was declared (partitions, cleanup policy, ...).

    ``reason`` is a stable CamelCase word for the operator's conditions: ``PartitionShrinkRefused``,
    ``PartitionGrowthRefused``, ``ConfigMismatch``, what the broker refused to create (``InvalidReplicationFactor``,
    ``InvalidTopicConfig``, ``KafkaAuthorizationFailed``, ...), or ``TopicMismatch`` for a declaration that
    cannot be.
    """

    def __init__(self, message: str, *, reason: str = "TopicMismatch") -> None:
        super().__init__(message)
        self.reason = reason


class AggregateDefinitionError(PermanentError):
    """An aggregate or projection class is declared wrongly."""


class KafkaFatalError(PermanentError):
    """The Kafka client reported a fatal error (for example a fenced producer)."""


class StoreCorruptedError(PermanentError):
    """A local state store holds data foldline cannot read."""
