"""An outage librdkafka's reports never mention still makes idle engines not-ready.

librdkafka reports a lost broker once; a report that goes missing (it came within the watch's stale window,
say) must not leave a handler or a projector ready for the whole outage. Here every report is ignored, so
only the engines' own question after a quiet spell (``KafkaWatch.check_due``) can notice.
"""

from __future__ import annotations

import threading
import time

import pytest

from foldline.aggregate import AggregateSpec
from foldline.handler.wiring import build_command_handler
from foldline.outage import KafkaWatch
from foldline.projection import load_projection
from foldline.projection.wiring import build_projector
from foldline.settings import HandlerSettings, KafkaSettings, ProjectorSettings
from tests.faults_support import aggregate_name, make_aggregate, own_broker, wait_until

pytestmark = [pytest.mark.kafka]


def test_idle_engines_notice_an_outage_no_report_mentions(tmp_path, monkeypatch):
    monkeypatch.setattr(KafkaWatch, "on_error", lambda self, error: None)
    with own_broker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        cls = make_aggregate(broker.bootstrap, aggregate_name("quiet"), partitions=2)
        handler = build_command_handler(
            AggregateSpec(cls()),
            HandlerSettings(kafka=kafka, state_dir=tmp_path / "state", instance_id="quiet", commit_interval_ms=20),
        )
        spec = load_projection("foldline.examples.invoices.views:InvoiceList", aggregate_name=cls.name)
        database = f"sqlite:///{tmp_path / 'views.db'}"
        projector = build_projector(spec, ProjectorSettings(kafka=kafka, database=database, batch_wait_ms=20))
        threads = [_start(handler.run), _start(projector.run)]
        try:
            wait_until(lambda: handler.ready() and projector.ready(), 120, "both ready")
            broker.stop()
            stopped = time.monotonic()
            wait_until(lambda: not handler.ready() and not projector.ready(), 60, "not-ready during the outage")
            print(f"\nnot-ready {time.monotonic() - stopped:.1f}s into the outage")
            broker.start(keep_data=True, timeout=180.0)
            wait_until(lambda: handler.ready() and projector.ready(), 180, "ready after the outage")
        finally:
            handler.stop()
            projector.stop()
            for thread in threads:
                thread.join(60)


def _start(target):
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread
