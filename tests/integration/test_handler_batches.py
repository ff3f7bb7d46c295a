"""A batch cut short by its time budget: the transaction commits the offsets of what it processed, so a restart
neither skips the records put back nor repeats any."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict

import pytest

from foldline.handler import engine
from foldline.records import CommandEnvelope
from foldline.topics import TopicNames, handler_group
from tests.integration.test_exactly_once import assert_exactly_once, workload
from tests.kafka_support import committed_offsets, read_topic, results, send, wait_for_results

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_records_put_back_by_the_time_budget_are_neither_skipped_nor_repeated(
    kafka_bootstrap, invoices_aggregate, run_handler, monkeypatch, tmp_path
):
    cls = invoices_aggregate(partitions=3)
    names = TopicNames(cls.name)
    cmds = workload(60, 5, prefix=f"b-{uuid.uuid4().hex[:6]}")
    send(kafka_bootstrap, names.commands, cmds)

    # Every batch now stops after its first record and puts the rest back, on every partition it holds.
    monkeypatch.setattr(engine, "BATCH_BUDGET_S", 0.0)
    handler = run_handler(cls(), state_dir=tmp_path / "first")
    deadline = time.monotonic() + 120
    while len(results(kafka_bootstrap, cls.name)) < 40 and time.monotonic() < deadline:
        time.sleep(0.2)
    handler.stop()  # the open transaction finishes; then close() gives the partitions up and clears the tasks
    while handler.tasks and time.monotonic() < deadline:
        time.sleep(0.05)

    answered = {r.command_id for r in results(kafka_bootstrap, cls.name)}
    assert 40 <= len(answered) < len(cmds), "the first handler should stop part-way"
    committed = committed_offsets(kafka_bootstrap, handler_group(cls.name), names.commands, 3)
    by_partition: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for msg in read_topic(kafka_bootstrap, names.commands):
        by_partition[msg.partition()].append((msg.offset(), CommandEnvelope.from_bytes(msg.value()).command_id))
    for p, records in by_partition.items():
        position = committed[p] if committed[p] >= 0 else 0
        below = {cid for offset, cid in records if offset < position}
        above = {cid for offset, cid in records if offset >= position}
        assert below <= answered, f"partition {p}: committed past records that have no result"
        assert not above & answered, f"partition {p}: results for records past the committed offset"

    # A new handler with the usual budget goes on from there: every command answered once.
    monkeypatch.setattr(engine, "BATCH_BUDGET_S", 2.0)
    run_handler(cls(), state_dir=tmp_path / "second")
    wait_for_results(kafka_bootstrap, cls.name, len(cmds))
    assert_exactly_once(kafka_bootstrap, cls, cmds)
