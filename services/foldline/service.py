"""How every long-running foldline process runs: health endpoints, signals, a clean stop."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Protocol

import structlog

from foldline.observability.http import HealthServer

log = structlog.get_logger("foldline.service")


class Engine(Protocol):
    def run(self) -> None: ...

    def stop(self) -> None: ...

    def live(self) -> bool: ...

    def ready(self) -> bool: ...


def serve(engine: Engine, http_port: int) -> int:
    """Run ``engine`` until SIGTERM or SIGINT, serving /healthz, /readyz and /metrics meanwhile."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        engine.stop()

    health = HealthServer(http_port, live=engine.live, ready=engine.ready).start()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        engine.run()
    finally:
        health.stop()
    return 0
