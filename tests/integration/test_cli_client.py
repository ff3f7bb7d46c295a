"""``foldline submit``, ``get`` and ``tail`` as a person runs them, against a real gateway and broker."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import threading

import httpx
import pytest

from foldline.aggregate import AggregateSpec
from foldline.gateway import Gateway, GatewayServer
from foldline.gateway.views import ViewService
from foldline.projection import load_projection, open_target
from foldline.projection.wiring import build_projector
from foldline.settings import GatewaySettings, KafkaSettings, ProjectorSettings
from tests.conftest import REPO

pytestmark = pytest.mark.kafka

CREATE = json.dumps({"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"})


@pytest.fixture
def cli_stack(kafka_bootstrap, invoices_aggregate, run_handler, tmp_path):
    cls = invoices_aggregate(partitions=2)
    run_handler(cls(), commit_interval_ms=5)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    database = f"sqlite:///{tmp_path / 'views.db'}"
    spec = load_projection("foldline.examples.invoices.views:InvoiceList", aggregate_name=cls.name)
    projector = build_projector(spec, ProjectorSettings(kafka=kafka, database=database, batch_wait_ms=5))
    thread = threading.Thread(target=projector.run, daemon=True)
    thread.start()
    gateway = Gateway(
        [AggregateSpec(cls())],
        GatewaySettings(kafka=kafka, host="127.0.0.1"),
        ViewService(database, {"invoice-list": cls.name}, opener=open_target),
    )
    with GatewayServer(gateway) as server:
        env = {
            **os.environ,
            "FOLDLINE_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "FOLDLINE_GATEWAY_URL": server.url,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        }
        env.pop("FOLDLINE_GATEWAY_TOKEN", None)
        yield cls.name, env
    projector.stop()
    thread.join(30)


def foldline(env, *args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "foldline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_submit_prints_results_readably(cli_stack):
    agg, env = cli_stack
    done = foldline(env, "submit", agg, "inv-1", "CreateInvoice", CREATE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == [f"accepted   {agg}/inv-1 CreateInvoice", "version    1  (InvoiceCreated)"]

    done = foldline(env, "submit", agg, "inv-1", "CreateInvoice", CREATE)
    assert done.returncode == 1
    assert "rejected" in done.stdout and "reason     the invoice already exists  [rejected]" in done.stdout

    done = foldline(env, "submit", agg, "inv-1", "SendInvoice", "--expected-version", "5")
    assert done.returncode == 1 and done.stdout.startswith("conflict")

    done = foldline(
        env,
        "submit",
        agg,
        "inv-1",
        "AddLineItem",
        '{"line_id": "a", "description": "Work", "quantity": 2, "unit_price": "50.00"}',
        "--expected-version",
        "1",
        "--json",
    )
    assert done.returncode == 0 and json.loads(done.stdout)["version"] == 2

    done = foldline(env, "submit", agg, "inv-1", "AddLineItem", "{not json")
    assert done.returncode == 2 and "not valid JSON" in done.stderr
    done = foldline(env, "submit", agg, "inv-1", "Shred")
    assert done.returncode == 2 and "404 unknown_command_type" in done.stderr
    done = foldline(env, "submit", agg, "inv-1", "SendInvoice", "--gateway", "http://127.0.0.1:9")
    assert done.returncode == 2 and "cannot reach the gateway" in done.stderr

    done = foldline(env, "submit", agg, "inv-2", "CreateInvoice", CREATE, "--no-wait")
    assert done.returncode == 0 and done.stdout.startswith("pending")


def test_get_reads_a_view_after_a_write(cli_stack):
    agg, env = cli_stack
    assert foldline(env, "submit", agg, "inv-9", "CreateInvoice", CREATE).returncode == 0
    done = foldline(env, "get", "invoice-list", "--aggregate-id", "inv-9", "--min-version", "1")
    assert done.returncode == 0, done.stderr
    header, rule, row, *rest = done.stdout.splitlines()
    assert header.split()[:3] == ["id", "customer", "status"] and set(rule) <= {"-", " "}
    assert row.split()[:3] == ["inv-9", "ACME", "draft"]
    assert rest == ["1 row(s) of invoice-list (version 1)"]
    done = foldline(env, "get", "invoice-list", "--where", "customer=Nobody")
    assert done.returncode == 0 and done.stdout.startswith("(no rows)")
    done = foldline(env, "get", "invoice-list", "--where", "colour=red")
    assert done.returncode == 2 and "unknown_column" in done.stderr
    done = foldline(env, "get", "invoice-list", "--aggregate-id", "nobody", "--min-version", "1", "--timeout", "0.5")
    assert done.returncode == 2 and "504" in done.stderr


def test_tail_decodes_every_topic_and_stops_on_ctrl_c(cli_stack):
    agg, env = cli_stack
    assert foldline(env, "submit", agg, "inv-t", "CreateInvoice", CREATE).returncode == 0
    done = foldline(env, "tail", f"{agg}.command-results", "--from-beginning", "--max", "1")
    assert done.returncode == 0, done.stderr
    assert "inv-t" in done.stdout and "result   accepted v1 InvoiceCreated  id=" in done.stdout
    done = foldline(env, "tail", f"{agg}.commands", "--from-beginning", "--max", "1")
    assert "command  CreateInvoice" in done.stdout and '"customer":"ACME"' in done.stdout
    done = foldline(env, "tail", f"{agg}.events", "--from-beginning", "--max", "1")
    assert "event    v1 InvoiceCreated" in done.stdout
    done = foldline(env, "tail", f"{agg}.snapshots", "--from-beginning", "--max", "1")
    assert "snapshot v1" in done.stdout
    done = foldline(env, "tail", "no-such-topic")
    assert done.returncode == 2 and "does not exist" in done.stderr

    # Following the end: a record sent now shows up; Ctrl-C stops it cleanly (exit 0, no traceback).
    proc = subprocess.Popen(
        [sys.executable, "-m", "foldline.cli", "tail", f"{agg}.command-results"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert "Ctrl-C stops" in proc.stderr.readline()
        ready = selectors.DefaultSelector()
        ready.register(proc.stdout, selectors.EVENT_READ)
        line = ""
        with httpx.Client(base_url=env["FOLDLINE_GATEWAY_URL"], timeout=30) as client:
            # Sent until one shows: a record sent before tail resolved "the end" is (rightly) not shown.
            for attempt in range(20):
                r = client.post(
                    f"/aggregates/{agg}/commands", json={"aggregate_id": f"inv-live-{attempt}", "type": "SendInvoice"}
                )
                assert r.status_code == 422
                if ready.select(timeout=2.0):
                    line = proc.stdout.readline()
                    break
        assert "inv-live-" in line and "result   rejected v0 rejected: the invoice does not exist" in line
        proc.send_signal(signal.SIGINT)
        try:  # both pipes drained meanwhile: a full one would hold the process at a write
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"tail did not stop within 60 s of Ctrl-C; its stderr ends: {err[-2000:]}") from None
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if not pipe.closed:
                pipe.close()
