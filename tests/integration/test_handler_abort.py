"""Transactions that fail with an abortable error: each is aborted, the same commands run again, and every
command is answered once."""

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
    """A real transactional producer whose every third ``send_offsets_to_transaction`` (4 times) fails with an
    abortable error, the code a broker back from an outage gave (OUT_OF_ORDER_SEQUENCE_NUMBER)."""

    lock = threading.Lock()
    calls = 0
    injected = 0

    def send_offsets_to_transaction(self, *args):
        with FlakyProducer.lock:
            FlakyProducer.calls += 1
            fail = FlakyProducer.calls % 3 == 0 and FlakyProducer.injected < 4
            FlakyProducer.injected += fail
        if fail:
            error = KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "injected by the test", txn_requires_abort=True)
            raise KafkaException(error)
        return super().send_offsets_to_transaction(*args)


@pytest.mark.parametrize("producers", [1, 2])
def test_aborted_transactions_run_again_and_every_command_gets_one_result(
    producers, kafka_bootstrap, invoices_aggregate, run_handler, monkeypatch
):
    monkeypatch.setattr(wiring, "Producer", FlakyProducer)
    monkeypatch.setattr(FlakyProducer, "calls", 0)
    monkeypatch.setattr(FlakyProducer, "injected", 0)
    cls = invoices_aggregate(partitions=3)
    names = TopicNames(cls.name)
    handler = run_handler(cls(), txn_producers=producers)
    cmds = workload(40, 6, prefix=f"ab-{uuid.uuid4().hex[:6]}")
    for start in range(0, len(cmds), 20):  # many small transactions, so that several of them fail
        send(kafka_bootstrap, names.commands, cmds[start : start + 20])
        time.sleep(0.05)
    wait_for_results(kafka_bootstrap, cls.name, len(cmds), timeout=120)
    time.sleep(1.0)  # a duplicate result, were there one, would be written by now

    assert FlakyProducer.injected == 4
    assert handler.ready()
    assert len(results(kafka_bootstrap, cls.name)) == len(cmds)
    assert_exactly_once(kafka_bootstrap, cls, cmds)
