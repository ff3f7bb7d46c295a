"""Log lines go to ``sys.stderr`` as it is when they are written (loggers are cached on first use), one
``write`` per line."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator

import pytest
import structlog

from foldline.observability.logging import configure_logging


@pytest.fixture
def json_logging() -> Iterator[None]:
    """foldline's JSON logging for the test; structlog's configuration as it was afterwards."""
    saved = structlog.get_config()
    configure_logging("json")
    try:
        yield
    finally:
        structlog.configure(**saved)


def test_a_cached_logger_follows_a_replaced_stderr(json_logging, monkeypatch):
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    log = structlog.get_logger("foldline.test")
    log.info("one", n=1)
    first.close()  # as a test's capture is closed once the test is over
    monkeypatch.setattr(sys, "stderr", second)
    log.info("two", n=2)
    line = json.loads(second.getvalue())
    assert line["event"] == "two" and line["n"] == 2 and line["level"] == "info"


class _Writes(io.StringIO):
    """Records each ``write`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


def test_each_line_is_one_write_so_another_thread_cannot_split_it(json_logging, monkeypatch):
    stream = _Writes()
    monkeypatch.setattr(sys, "stderr", stream)
    structlog.get_logger("foldline.test").warning("batch failed", error="x" * 300)
    assert len(stream.calls) == 1 and stream.calls[0].endswith("}\n")
    assert json.loads(stream.calls[0])["error"] == "x" * 300
