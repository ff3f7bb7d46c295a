"""The transactional calls of the exactly-once engines (command handler, policy worker): their bounds, and
how their failures are sorted.

``Abort``: abort the transaction and run the same input again. ``Recover``: only new Kafka clients can
go on (the engine waits for the broker and rebuilds them). A fenced producer is told apart, as it waits
longer before rejoining.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from foldline.errors import BrokerUnavailableError, KafkaAuthenticationError, KafkaFatalError
from foldline.outage import KafkaWatch

# Bounds on the transactional calls: librdkafka's own timeouts, so the loop never blocks for long.
TXN_TIMEOUT = 20.0
COMMIT_ATTEMPTS = 3
# librdkafka's codes for "another producer with this transactional id took over" (or bumped our epoch).
FENCED = (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)


class Abort(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Recover(Exception):
    """Only new Kafka clients can go on (see ``CommandHandler._recover``, ``PolicyWorker._recover``)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


#: What an engine's loop answers by waiting for the broker and starting over with new clients.
KAFKA_FAILURES = (BrokerUnavailableError, KafkaAuthenticationError, KafkaFatalError, KafkaException, Abort, Recover)


def call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a transactional API, sorting its errors into abort, retry and fatal."""
    try:
        return fn(*args)
    except KafkaException as exc:
        error = exc.args[0]
        if error.txn_requires_abort():
            raise Abort(exc) from exc
        if error.fatal():
            raise KafkaFatalError(f"{getattr(fn, '__name__', fn)} failed: {error.str()}") from exc
        if error.retriable():
            raise BrokerUnavailableError(f"{getattr(fn, '__name__', fn)}: {error.str()}") from exc
        raise KafkaFatalError(f"{getattr(fn, '__name__', fn)} failed: {error.str()}") from exc


def fenced(exc: BaseException | None) -> bool:
    """Whether a fenced producer is somewhere in the exception's cause chain."""
    while exc is not None:
        error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
        if isinstance(error, KafkaError) and error.code() in FENCED:
            return True
        exc = exc.__cause__ or (exc.cause if isinstance(exc, (Abort, Recover)) else None)
    return False


def producer_error(producer: Producer) -> KafkaException | None:
    """The producer's fatal error, if it has one: a call that failed with ``_FATAL`` hides the cause, and
    a purge (the producer is about to be replaced anyway) reports it."""
    try:
        producer.purge()
    except KafkaException as exc:
        return exc
    return None


def commit(producer: Producer, watch: KafkaWatch) -> None:
    """Commit, resuming a retriable failure (as librdkafka allows).

    A commit that went through only when resumed spanned an outage longer than the call's timeout, and so
    longer than the transaction timeout (10 s), past which the coordinator aborts a transaction on its own.
    Whether this one was committed or aborted is then taken from Kafka, not from memory: ``Recover`` (new
    clients, positions from the committed offsets, states from the snapshots or state topics). Once, in a
    full test run, a handler that kept its in-memory positions after such a commit left commands unanswered for good
    (docs/reliability.md). A commit that keeps failing has an unknown outcome too: ``Recover`` as well.
    """
    resumed: KafkaException | None = None
    for _ in range(COMMIT_ATTEMPTS):
        try:
            producer.commit_transaction(TXN_TIMEOUT)
        except KafkaException as exc:
            error = exc.args[0]
            if error.txn_requires_abort():
                raise Abort(exc) from exc
            if error.retriable():
                watch.mark_down(f"commit: {error.str()}")
                resumed = exc
                continue
            raise KafkaFatalError(f"commit failed: {error.str()}") from exc
        if resumed is not None:
            raise Recover(
                BrokerUnavailableError("the commit went through only when resumed after an outage")
            ) from resumed
        return
    raise Recover(BrokerUnavailableError("commit kept failing with retriable errors"))
