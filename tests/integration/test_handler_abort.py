"""A transaction that fails with an abortable error: the producer is replaced by a new one with its
transactional id (never asked to abort and reused), and the same commands run again, each answered once."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from foldline.handler import wiring
from foldline.topics import TopicNames
from tests.integration.test_exactly_once import assert_exactly_once, workload
from tests.kafka_support import results, send, wait_for_results

pytestmark = [pytest.mark.kafka]


class FlakyProducer(Producer):
    """A real transactional producer whose every third ``send_offsets_to_transaction`` fails as the broker's
    OUT_OF_ORDER_SEQUENCE_NUMBER does after an outage (abortable, epoch bump required)."""

    lock = threading.Lock()
    made: list[FlakyProducer] = []
    failed: list[FlakyProducer] = []
    calls = 0
    injected = 0

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        with FlakyProducer.lock:
            FlakyProducer.made.append(self)

    def send_offsets_to_transaction(self, *args):
        with FlakyProducer.lock:
            FlakyProducer.calls += 1
            fail = FlakyProducer.calls % 3 == 0 and FlakyProducer.injected < 4
            FlakyProducer.injected += fail
        if fail:
            FlakyProducer.failed.append(self)
            error = KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "injected by the test", txn_requires_abort=True)
            raise KafkaException(error)
        return super().send_offsets_to_transaction(*args)


def test_an_aborted_transaction_gets_a_new_producer_and_every_command_one_result(
    kafka_bootstrap, invoices_aggregate, run_handler, monkeypatch
):
    monkeypatch.setattr(wiring, "Producer", FlakyProducer)
    monkeypatch.setattr(FlakyProducer, "made", [])
    monkeypatch.setattr(FlakyProducer, "failed", [])
    cls = invoices_aggregate(partitions=3)
    names = TopicNames(cls.name)
    handler = run_handler(cls(), txn_producers=2)
    first = len(handler.producers)
    cmds = workload(40, 6, prefix=f"ab-{uuid.uuid4().hex[:6]}")
    for start in range(0, len(cmds), 20):  # many small transactions, so that several of them fail
        send(kafka_bootstrap, names.commands, cmds[start : start + 20])
        time.sleep(0.05)
    wait_for_results(kafka_bootstrap, cls.name, len(cmds), timeout=120)
    time.sleep(1.0)  # a duplicate result, were there one, would be written by now

    assert FlakyProducer.injected == 4
    # Each failed producer was replaced by a new one in its place, and none was used again.
    assert len(set(FlakyProducer.failed)) == 4
    assert len(FlakyProducer.made) == first + 4
    assert not set(FlakyProducer.failed) & set(handler.producers)
    assert handler.ready()
    assert len(results(kafka_bootstrap, cls.name)) == len(cmds)
    assert_exactly_once(kafka_bootstrap, cls, cmds)
