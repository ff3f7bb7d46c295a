"""What a person and Kubernetes see of a projector: ``foldline projection status``, /readyz and /metrics,
before, during and after a rebuild."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import httpx
import pytest

from foldline.examples.invoices.views import InvoiceList
from foldline.observability.http import HealthServer
from foldline.projection import ProjectionSpec, RowChange, Snapshot
from foldline.projection.wiring import build_projector
from foldline.settings import KafkaSettings, ProjectorSettings
from foldline.topics import TopicNames
from tests.conftest import REPO
from tests.integration.test_projector_kill import invoice_workload, wait_until
from tests.kafka_support import send, wait_for_results

pytestmark = [pytest.mark.kafka]

LIST = "foldline.examples.invoices.views:InvoiceList"


class GatedListV2(InvoiceList):
    """Revision 2 that projects a few snapshots, then waits for the test to let it go on."""

    revision = 2
    gate = threading.Event()
    calls = 0

    def project(self, record: Snapshot) -> list[RowChange]:
        type(self).calls += 1
        if type(self).calls > 30:
            assert type(self).gate.wait(60)
        return super().project(record)


def status(bootstrap: str, database: str, aggregate: str, *extra: str) -> str:
    env = {
        **os.environ,
        "FOLDLINE_KAFKA_BOOTSTRAP": bootstrap,
        "FOLDLINE_LOG_FORMAT": "json",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "foldline.cli",
            "projection",
            "status",
            "--projection",
            LIST,
            "--aggregate-name",
            aggregate,
            "--database",
            database,
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_status_health_and_metrics_through_a_rebuild(kafka_bootstrap, invoices_aggregate, run_handler, tmp_path):
    cls = invoices_aggregate(partitions=3)
    cmds = invoice_workload(invoices=200, prefix="s")
    send(kafka_bootstrap, TopicNames(cls.name).commands, cmds)
    run_handler(cls())
    wait_for_results(kafka_bootstrap, cls.name, len(cmds))
    database = f"sqlite:///{tmp_path / 'views.db'}"
    settings = ProjectorSettings(
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap), database=database, batch_wait_ms=20, max_batch=10
    )
    v1 = build_projector(ProjectionSpec(InvoiceList(aggregate_name=cls.name)), settings)
    v2 = build_projector(ProjectionSpec(GatedListV2(aggregate_name=cls.name)), settings)
    servers = [HealthServer(0, live=p.live, ready=p.ready, host="127.0.0.1").start() for p in (v1, v2)]
    threads = [threading.Thread(target=v1.run, daemon=True)]
    threads[0].start()
    try:
        wait_until(lambda: v1.ready() and v1.lag() == 0, 60, "revision 1 to catch up")
        assert status(kafka_bootstrap, database, cls.name).splitlines() == [
            "VIEW          AGGREGATE       ACTIVE  BUILDING  PROGRESS  LAG",
            f"invoice-list  {cls.name}  1       -         -         0",
        ]

        threads.append(threading.Thread(target=v2.run, daemon=True))
        threads[1].start()
        wait_until(lambda: GatedListV2.calls > 30, 60, "revision 2 to start rebuilding")
        [line] = status(kafka_bootstrap, database, cls.name).splitlines()[1:]
        view, aggregate, active, building, progress, lag = line.split()
        assert (view, aggregate, active, building, lag) == ("invoice-list", cls.name, "1", "2", "0")
        assert 0 < float(progress.rstrip("%")) < 100
        [data] = json.loads(status(kafka_bootstrap, database, cls.name, "--json"))
        assert data["active_revision"] == 1 and data["building_revision"] == 2 and 0 < data["progress"] < 1
        assert [(r["revision"], r["state"]) for r in data["revisions"]] == [(1, "active"), (2, "building")]

        with httpx.Client(timeout=10) as http:
            url1, url2 = (f"http://127.0.0.1:{s.port}" for s in servers)
            assert http.get(f"{url1}/readyz").status_code == 200
            assert http.get(f"{url2}/readyz").status_code == 503  # not ready until it serves the view
            assert http.get(f"{url2}/healthz").status_code == 200
            metrics = http.get(f"{url2}/metrics").text
            gauges = [
                m
                for m in metrics.splitlines()
                if m.startswith("foldline_projection_rebuild_progress_ratio{") and f'aggregate="{cls.name}"' in m
            ]
            [progress_line] = gauges  # only the rebuilding revision has one
            assert 'revision="2"' in progress_line and 0 < float(progress_line.split()[-1]) < 1
            assert f'foldline_projection_lag{{aggregate="{cls.name}",projection="invoice-list"}}' in metrics

            GatedListV2.gate.set()
            wait_until(lambda: v2.ready(), 60, "revision 2 to switch")
            assert http.get(f"{url2}/readyz").status_code == 200
        threads[0].join(30)
        assert v1.retired
        [line] = status(kafka_bootstrap, database, cls.name).splitlines()[1:]
        assert line.split() == ["invoice-list", cls.name, "2", "-", "-", "0"]
    finally:
        GatedListV2.gate.set()
        for projector in (v1, v2):
            projector.stop()
        for thread in threads:
            thread.join(30)
        for server in servers:
            server.stop()
