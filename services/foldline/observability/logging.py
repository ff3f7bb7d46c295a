"""structlog set up once: JSON lines in pods, readable key=value output at a terminal."""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO, cast

import structlog


class _CurrentStderr:
    """``sys.stderr`` as it is when a line is written, not when logging was set up: loggers are cached on
    first use, and a stream replaced since (a test's capture, a redirect) may be closed by then. Each line
    is one ``write`` (``WriteLogger``; ``print`` wrote the text and the newline apart, and a library's own
    ``logging`` line from another thread landed between them: two records on one line)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(fmt: str | None = None, level: str | None = None) -> None:
    """``fmt`` is ``json`` or ``console`` (default: console on a TTY, JSON otherwise)."""
    fmt = fmt or os.environ.get("FOLDLINE_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
    level_name = (level or os.environ.get("FOLDLINE_LOG_LEVEL") or "info").upper()
    numeric = logging.getLevelNamesMapping().get(level_name, logging.INFO)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=True,
    )
