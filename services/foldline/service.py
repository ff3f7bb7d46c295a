"""How every long-running foldline process runs: health endpoints, signals, a clean stop."""

from __future__ import annotations

import gc
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Protocol

import structlog
from prometheus_client import generate_latest

from foldline.errors import RetryableError
from foldline.observability.http import HealthServer
from foldline.outage import Backoff

log = structlog.get_logger("foldline.service")


#: The young generation's threshold (Python's default: 700 allocations). A command or a request allocates
#: a few hundred objects that die with it; at the default the collector ran several times per batch, each
#: pass walking everything in flight and promoting it to the older generations, whose passes then walk the
#: whole heap (a handler's cache of decoded aggregates): 10-15% of the handler's and the gateway's CPU.
GC_YOUNG_THRESHOLD = 50_000


def quiet_gc() -> None:
    """Collect less often, and never walk what start-up made (modules, clients): a process of its own."""
    gc.collect()
    gc.freeze()  # start-up objects live as long as the process: out of every later full collection
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


class Engine(Protocol):
    def run(self) -> None: ...

    def stop(self) -> None: ...

    def live(self) -> bool: ...

    def ready(self) -> bool: ...


def serve(engine: Engine, http_port: int, metrics: Callable[[], bytes] = generate_latest) -> int:
    """Run ``engine`` until SIGTERM or SIGINT, serving /healthz, /readyz and /metrics meanwhile.

    ``metrics`` renders /metrics when it is not this process's registry (the handler's worker supervisor)."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        engine.stop()

    health = HealthServer(http_port, live=engine.live, ready=engine.ready, metrics=metrics).start()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    quiet_gc()
    try:
        engine.run()
    finally:
        health.stop()
    return 0


def serve_when_built(build: Callable[[], Engine], http_port: int) -> int:
    """``serve`` an engine that may not be buildable yet: while ``build`` fails with a ``RetryableError``
    (its database or broker away at start), the process stays up - live, not ready - and tries again
    with a jittered backoff, until it succeeds or SIGTERM/SIGINT ends the wait."""
    stopping = threading.Event()
    built: list[Engine] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stopping.set()
        for engine in built:
            engine.stop()

    health = HealthServer(
        http_port,
        live=lambda: not built or built[0].live(),
        ready=lambda: bool(built) and built[0].ready(),
    ).start()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    backoff = Backoff(first=1.0, cap=30.0)
    try:
        while not built and not stopping.is_set():
            try:
                engine = build()
            except RetryableError as exc:
                wait = backoff.next()
                log.warning("cannot start yet; trying again", cause=str(exc), retry_in_s=round(wait, 1))
                stopping.wait(wait)
                continue
            built.append(engine)
            if stopping.is_set():  # a signal between the build and the append
                engine.stop()
        if built:
            quiet_gc()
            built[0].run()
    finally:
        health.stop()
    return 0
