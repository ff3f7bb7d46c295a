"""The exactly-once engines' commit: resumed after a retriable failure, its outcome is taken from Kafka (Recover)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from foldline.outage import KafkaWatch
from foldline.transactions import Recover, commit


class Producer:
    """Fails ``commit_transaction`` with the given errors first, then succeeds."""

    def __init__(self, *errors: KafkaError) -> None:
        self.errors = list(errors)
        self.calls = 0

    def commit_transaction(self, timeout: float) -> None:
        self.calls += 1
        if self.errors:
            raise KafkaException(self.errors.pop(0))


def timed_out() -> KafkaError:
    return KafkaError(KafkaError._TIMED_OUT, "Timed out waiting for operation to finish, retry call to resume",
                      retriable=True)  # fmt: skip


def test_a_commit_that_goes_through_at_once_returns() -> None:
    producer = Producer()
    commit(producer, KafkaWatch("test"))  # type: ignore[arg-type]
    assert producer.calls == 1


def test_a_commit_that_goes_through_only_when_resumed_rebuilds_from_kafka() -> None:
    producer, watch = Producer(timed_out()), KafkaWatch("test")
    with pytest.raises(Recover) as raised:
        commit(producer, watch)  # type: ignore[arg-type]
    assert producer.calls == 2  # resumed once, and it went through
    assert "resumed" in str(raised.value)
    assert isinstance(raised.value.__cause__, KafkaException)
    assert not watch.up  # the retriable failure marked the broker away


def test_a_commit_that_keeps_failing_rebuilds_from_kafka() -> None:
    producer: Any = Producer(timed_out(), timed_out(), timed_out())
    with pytest.raises(Recover, match="kept failing"):
        commit(producer, KafkaWatch("test"))
    assert producer.calls == 3
