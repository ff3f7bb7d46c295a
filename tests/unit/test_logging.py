"""Log lines go to ``sys.stderr`` as it is when they are written (loggers are cached on first use)."""

from __future__ import annotations

import io
import json
import sys

import structlog

from foldline.observability.logging import configure_logging


def test_a_cached_logger_follows_a_replaced_stderr(monkeypatch):
    saved = structlog.get_config()
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    try:
        configure_logging("json")
        log = structlog.get_logger("foldline.test")
        log.info("one", n=1)
        first.close()  # as a test's capture is closed once the test is over
        monkeypatch.setattr(sys, "stderr", second)
        log.info("two", n=2)
    finally:
        structlog.configure(**saved)
    line = json.loads(second.getvalue())
    assert line["event"] == "two" and line["n"] == 2 and line["level"] == "info"
