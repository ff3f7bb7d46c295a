"""Taking batches from a consumer-group member; shared by the command handler and the projector."""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaError, Message

from foldline.errors import KafkaFatalError

# What a broker without KIP-848's consumer protocol answers when asked for it.
_NO_CONSUMER_PROTOCOL = (KafkaError.UNSUPPORTED_VERSION, KafkaError._UNSUPPORTED_FEATURE)


class ProtocolUnsupported(Exception):
    """The broker does not offer the KIP-848 consumer protocol; use the classic one."""


def initial_protocol(setting: str) -> str:
    """``auto`` starts with KIP-848 and falls back on ``ProtocolUnsupported``."""
    return "consumer" if setting == "auto" else setting


def take_batch(consumer: Consumer, max_batch: int, wait: float, *, may_fall_back: bool) -> list[Message]:
    """The records queued now, up to ``max_batch``, waiting at most ``wait`` seconds for the first.

    A batch never waits for more records than are there: an idle loop answers at once and a busy one gets
    big batches by itself. Non-fatal consumer errors are returned to nobody (librdkafka retries them);
    fatal ones raise ``KafkaFatalError``.
    """
    first = consumer.consume(1, wait)
    if not first:
        return []
    batch = first + consumer.consume(max_batch - 1, 0) if max_batch > 1 else first
    records = []
    for msg in batch:
        error = msg.error()
        if error is None:
            records.append(msg)
        elif may_fall_back and error.code() in _NO_CONSUMER_PROTOCOL:
            raise ProtocolUnsupported(error.str())
        elif error.fatal():
            raise KafkaFatalError(f"consumer failed: {error.str()}")
    return records
