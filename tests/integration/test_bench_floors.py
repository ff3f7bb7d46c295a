"""The latency benchmark's floor: the raw pipeline answers every command once, through the same reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import support
from bench.handler_perf import latency

pytestmark = pytest.mark.kafka


def test_the_raw_pipeline_answers_every_offered_command(kafka_bootstrap: str, tmp_path: Path) -> None:
    try:
        waits = latency(kafka_bootstrap, tmp_path, 100, 1.0, 1, 2, warmup=0.5, raw=True)
    finally:
        support.delete_created_topics()
    assert len(waits) == 100  # every command sent in the measured second has its result, read_committed
    assert waits == sorted(waits) and waits[0] > 0
