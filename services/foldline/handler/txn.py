"""The command handler's transactional calls: their bounds, and how their failures are sorted.

``Abort``: abort the transaction and run the same commands again. ``Recover``: only new Kafka clients can
go on (the engine waits for the broker and rebuilds them). A fenced producer is told apart, as it waits
longer before rejoining.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from foldline.errors import BrokerUnavailableError, KafkaFatalError

log = structlog.get_logger("foldline.handler")

# Bounds on the transactional calls: librdkafka's own timeouts, so the loop never blocks for long.
TXN_TIMEOUT = 20.0
COMMIT_ATTEMPTS = 3
# librdkafka's codes for "another producer with this transactional id took over" (or bumped our epoch).
FENCED = (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)


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


class Abort(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Recover(Exception):
    """Only new Kafka clients can go on (see ``CommandHandler._recover``)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class OffsetsSender:
    """``send_offsets_to_transaction`` on a thread of its own while the loop processes the batch.

    The call is two round trips to the broker (AddOffsetsToTxn, then TxnOffsetCommit) that need nothing
    from the batch's processing, only its offsets, known once the batch is taken; the binding releases the
    GIL while librdkafka waits, so they overlap the Python work instead of following it. The loop must
    ``wait`` before any other transactional call (librdkafka refuses concurrent ones)."""

    def __init__(self, producer: Producer, offsets: list[TopicPartition], group_metadata: Any) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(producer, offsets, group_metadata), name="foldline-offsets", daemon=True
        )
        self._thread.start()

    def _run(self, producer: Producer, offsets: list[TopicPartition], group_metadata: Any) -> None:
        try:
            call(producer.send_offsets_to_transaction, offsets, group_metadata, TXN_TIMEOUT)
        except BaseException as exc:  # handed to the loop's thread by wait()
            self._error = exc

    def wait(self) -> None:
        """Return once the offsets are in the transaction; raise what the call raised (see ``call``).

        librdkafka can wait past the call's own timeout while the coordinator is away (see the engine's
        _STALLED); past a margin, only new clients can go on, and this producer is left to that thread."""
        self._thread.join(TXN_TIMEOUT + 10.0)
        if self._thread.is_alive():
            raise Recover(BrokerUnavailableError("send_offsets_to_transaction did not return in time"))
        if self._error is not None:
            raise self._error

    def settle(self) -> None:
        """Wait before an abort: the abort is refused while the call runs; its error no longer matters."""
        with contextlib.suppress(Abort, BrokerUnavailableError, KafkaFatalError):
            self.wait()


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


def discard(client: Producer | Consumer) -> None:
    """Let go of a failed client without waiting on the broker: purge a producer's queue, close a consumer."""
    try:
        if isinstance(client, Producer):
            client.purge()
            client.flush(0)
        else:
            client.close()
    except (KafkaException, RuntimeError) as exc:
        log.info("discarding a failed client", error=str(exc))
