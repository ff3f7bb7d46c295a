"""Running the gateway: build it from import paths and settings, serve it with uvicorn.

``serve`` is what ``foldline gateway`` calls; tests and the demo start the same thing in a child
process or a thread (``GatewayServer``) on a loopback port.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

import structlog
import uvicorn

from foldline.aggregate import AggregateSpec, load_aggregate
from foldline.errors import ConfigurationError, FoldlineError
from foldline.gateway.app import create_app
from foldline.gateway.core import Gateway
from foldline.gateway.slow import timed_http
from foldline.gateway.views import ViewCatalog, ViewService
from foldline.service import quiet_gc
from foldline.settings import GatewaySettings

log = structlog.get_logger("foldline.gateway")


def build_gateway(
    aggregates: Sequence[str | AggregateSpec],
    settings: GatewaySettings,
    *,
    projections: Sequence[str] = (),
    database: str | None = None,
    catalog: ViewCatalog | None = None,
) -> Gateway:
    """A gateway of ``aggregates``; with ``database``, also the views of ``projections`` (through ``catalog``)."""
    specs = [a if isinstance(a, AggregateSpec) else load_aggregate(a) for a in aggregates]
    if not specs:
        raise ConfigurationError("the gateway needs at least one --aggregate")
    views = None
    if projections and not database:
        raise ConfigurationError("--projection needs --database: where the projector writes its rows")
    if database:
        if not database.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ConfigurationError(
                f"--database must be sqlite:///path.db or postgresql://..., got {database.split('://', 1)[0]}://..."
            )
        if catalog is None:
            raise ConfigurationError("serving views needs the projections' catalog (see foldline.cli)")
        names = dict(catalog.view_of(path) for path in projections)
        journals = {}
        for spec in specs:
            try:
                journals[spec.name] = catalog.journal_of(spec.name)
            except FoldlineError as exc:  # a name too long for a journal: history answers 404, saying so
                log.warning("no event journal", aggregate=spec.name, error=str(exc))
        views = ViewService(
            database,
            names,
            opener=catalog.open,
            read_timeout_s=settings.read_timeout_s,
            max_read_timeout_s=settings.max_read_timeout_s,
            journals=journals,
        )
    return Gateway(specs, settings, views)


class _Server(uvicorn.Server):
    """uvicorn, but a stop signal first ends the gateway's open streams so draining is quick."""

    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        loop = self.gateway.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.gateway.begin_shutdown)
        super().handle_exit(sig, frame)


def uvicorn_config(gateway: Gateway, host: str, port: int) -> uvicorn.Config:
    settings = gateway.settings
    return uvicorn.Config(
        create_app(gateway),
        host=host,
        port=port,
        http=timed_http(settings.header_timeout_s),  # slow headers time out (see foldline.gateway.slow)
        timeout_keep_alive=max(1, round(settings.keep_alive_s)),
        limit_concurrency=settings.max_connections,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        server_header=False,
    )


def serve(gateway: Gateway) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit code."""
    settings = gateway.settings
    server = _Server(uvicorn_config(gateway, settings.host, settings.port), gateway)

    def after_drain(signum: int, frame: FrameType | None) -> None:
        # uvicorn re-raises the stop signal once it has drained; a stop asked for is a clean exit (0).
        log.info("gateway stopped on signal", signal=signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, after_drain)
    log.info("gateway listening", host=settings.host, port=settings.port)
    quiet_gc()
    server.run()
    return 0 if server.started else 1


class GatewayServer:
    """A gateway served by uvicorn in a thread of this process, on a loopback port (tests, benchmarks)."""

    def __init__(self, gateway: Gateway, port: int = 0, host: str = "127.0.0.1") -> None:
        self.gateway = gateway
        self.host = host
        self.port = port or free_port(host)
        self.server = uvicorn.Server(uvicorn_config(gateway, host, self.port))
        self._thread = threading.Thread(target=self.server.run, name="foldline-gateway-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, ready_timeout: float = 60.0) -> GatewayServer:
        self._thread.start()
        deadline = time.monotonic() + ready_timeout
        while not (self.server.started and self.gateway.ready()):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigurationError(
                    f"the gateway did not become ready within {ready_timeout}s "
                    f"(reader error: {self.gateway.reader.error})"
                )
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(30)

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
