"""The handler as a person runs it: a process with health, readiness and metrics on one port."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from foldline import KafkaSettings
from foldline.topics import TopicNames
from tests.conftest import aggregate_path
from tests.kafka_support import command, send, start_handler, wait_for_results

pytestmark = pytest.mark.kafka

CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_health_readiness_and_metrics(kafka_bootstrap, invoices_aggregate, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cls = invoices_aggregate(partitions=2)
    proc = start_handler(
        kafka_bootstrap,
        aggregate_path(cls),
        tmp_path / "s",
        "h",
        tmp_path,
        {"FOLDLINE_TXN_PRODUCERS": "2"},
        http_port=port,
    )
    try:
        deadline = time.monotonic() + 60
        # Ready with its partitions restored: it also says ready in the moment between joining the group and
        # its first assignment, and then not ready while it restores (the test once asked just then).
        while time.monotonic() < deadline and not (_ready(port) and "partitions assigned" in proc.log.read_text()):
            time.sleep(0.2)
        assert get(port, "/healthz") == (200, "ok\n")
        assert get(port, "/readyz")[0] == 200
        send(kafka_bootstrap, TopicNames(cls.name).commands, [command("i", "CreateInvoice", CREATE)])
        wait_for_results(kafka_bootstrap, cls.name, 1)
        status, text = get(port, "/metrics")
        assert status == 200
        assert f'foldline_commands_total{{aggregate="{cls.name}",status="accepted"}} 1.0' in text
        assert "foldline_transaction_duration_seconds_bucket" in text
        # Two transactional producers (FOLDLINE_TXN_PRODUCERS=2) take turns: a few more transactions,
        # one command each, and each producer has committed some.
        for n in range(4):
            send(kafka_bootstrap, TopicNames(cls.name).commands, [command(f"j{n}", "CreateInvoice", CREATE)])
            wait_for_results(kafka_bootstrap, cls.name, 2 + n)
        text = get(port, "/metrics")[1]
        for producer in ("0", "1"):
            series = f'foldline_transactions_committed_total{{aggregate="{cls.name}",producer="{producer}"}} '
            committed = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(series)]
            assert committed and committed[0] >= 2, (producer, committed)
        assert get(port, "/nope")[0] == 404
    finally:
        assert proc.terminate() == 0  # SIGTERM: a clean stop
    log = proc.log.read_text()
    assert "command handler stopped" in log and "partitions revoked" in log


def _ready(port: int) -> bool:
    try:
        return get(port, "/readyz")[0] == 200
    except OSError:  # not listening yet
        return False


def test_classic_protocol_with_cooperative_sticky(kafka_bootstrap, invoices_aggregate, run_handler):
    cls = invoices_aggregate(partitions=2)
    cmds = [command(f"c{i}", "CreateInvoice", CREATE) for i in range(20)]
    send(kafka_bootstrap, TopicNames(cls.name).commands, cmds)
    run_handler(cls(), kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, group_protocol="classic"))
    got = wait_for_results(kafka_bootstrap, cls.name, len(cmds))
    assert {r.status for r in got} == {"accepted"}


def test_bad_configuration_is_a_clear_error(invoices_aggregate, tmp_path):
    import os
    import subprocess
    import sys

    cls = invoices_aggregate(partitions=1)
    env = {**os.environ, "FOLDLINE_STORE": "cassandra"}
    done = subprocess.run(
        [sys.executable, "-m", "foldline.cli", "command-handler", "--aggregate", aggregate_path(cls)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "FOLDLINE_STORE must be one of" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "foldline.cli", "command-handler", "--aggregate", "nope:X"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "cannot import 'nope'" in done.stderr
