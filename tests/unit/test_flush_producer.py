"""``flush_producer``: a fenced producer's error out of ``flush()`` reaches the engines as a KafkaException.

confluent-kafka raises a fenced transactional producer's fatal error inside ``flush()`` and then runs the next
delivery callback with it pending; Python reports that as a SystemError caused by the KafkaException (seen in
tests/integration/test_handler_process.py's fencing test). A real fencing cannot be staged without a broker,
so a stand-in raises what flush() raised there.
"""

from __future__ import annotations

from typing import cast

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from foldline.clients import flush_producer


class _Flushing:
    def __init__(self, outcome: int | BaseException) -> None:
        self.outcome = outcome
        self.timeouts: list[float] = []

    def flush(self, timeout: float) -> int:
        self.timeouts.append(timeout)
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


def _system_error_from(cause: BaseException) -> SystemError:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise SystemError("<function _on_snapshot> returned a result with an exception set") from inner
    except SystemError as outer:
        return outer


def test_the_undelivered_count_passes_through() -> None:
    stand_in = _Flushing(3)
    assert flush_producer(cast(Producer, stand_in), 2.5) == 3
    assert stand_in.timeouts == [2.5]


def test_a_fenced_producers_error_comes_out_as_its_kafka_exception() -> None:
    fenced = KafkaException(KafkaError(KafkaError._FENCED, "producer fenced"))
    with pytest.raises(KafkaException) as raised:
        flush_producer(cast(Producer, _Flushing(_system_error_from(fenced))), 1.0)
    assert raised.value is fenced
    assert raised.value.args[0].code() == KafkaError._FENCED


def test_a_system_error_with_another_cause_is_not_hidden() -> None:
    with pytest.raises(SystemError):
        flush_producer(cast(Producer, _Flushing(_system_error_from(ValueError("bug")))), 1.0)
