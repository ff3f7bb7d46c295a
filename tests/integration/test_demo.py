"""``foldline demo --once`` end to end, as a person runs it: every process a child, the walk over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_demo_once_walks_an_invoice_and_stops_cleanly(kafka_bootstrap):
    # Without FOLDLINE_KAFKA_BOOTSTRAP the demo starts the development broker itself (here it finds the
    # one the session runs, as `make demo` would after `make kafka-up`).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for run in range(2):  # a second run works as well: a fresh invoice id, a fresh run directory
        done = subprocess.run(
            [sys.executable, "-m", "foldline.cli", "demo", "--once", "--port", "0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
            cwd=REPO,
            check=False,
        )
        out = done.stdout + done.stderr
        assert done.returncode == 0, out
        for expected in (
            "-> 200 accepted, version 1 (InvoiceCreated)",
            "invoice-line-items @v4: a: Consulting (days) 3 x 100.00 = 300.00",
            "-> 422 rejected: payment 250.00 exceeds the balance 200.00",
            "-> 200 accepted, version 8 (PaymentRecorded, InvoicePaid)",
            "status=paid currency=EUR total=300.00 balance=0.00",
            "v8 ",  # the timeline from the event journal
            "state at version 2: status=draft lines=1 (now: version 8)",
            # the broker was running before (the session's): the demo leaves it, and says so
            "the Kafka broker keeps running (stop it with `make kafka-down`)",
        ):
            assert expected in out, (run, expected, out)
        assert out.count("stopped (ok)") == 6, out
