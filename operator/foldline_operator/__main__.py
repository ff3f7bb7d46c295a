"""``python -m foldline_operator`` (or ``foldline-operator``): the kopf operator as one process.

It serves ``/healthz`` (kopf's event loop runs: ``probes``), ``/readyz`` (kopf has started and this
replica is the acting one, not a paused standby), ``/started`` (kopf has started, acting or not) and
``/metrics`` on ``FOLDLINE_HTTP_PORT``
(default 8080) and logs JSON lines in pods (``FOLDLINE_LOG_FORMAT``), kopf's own logs included.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence

import structlog

from foldline.observability.http import HealthServer
from foldline.observability.logging import configure_logging
from foldline_operator.config import parse_args


def _configure_kopf_logging(fmt: str) -> None:
    import kopf

    kopf.configure(
        log_format=kopf.LogFormat.JSON if fmt == "json" else kopf.LogFormat.PLAIN, log_refkey="object", verbose=False
    )
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    import kopf

    from foldline_operator.handlers import register
    from foldline_operator.probes import Probes

    config, log_format = parse_args(argv)
    fmt = log_format or os.environ.get("FOLDLINE_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
    configure_logging(fmt)
    _configure_kopf_logging(fmt)
    ready = threading.Event()
    probes = Probes(config.liveness_seconds)
    # /started is the kubelet's readiness probe: a standby that never turned ready would stall every
    # rollout (no pod of the new ReplicaSet becomes available) and every drain behind a PDB.
    health = HealthServer(
        config.http_port,
        live=probes.alive,
        ready=lambda: ready.is_set() and probes.acting(),
        extra={"/started": ready.is_set},
    ).start()
    structlog.get_logger("foldline.operator").info("serving health and metrics", port=health.port)
    try:
        kopf.run(
            registry=register(config, probes=probes),
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            standalone=config.standalone,
            priority=config.priority,
            peering_name=config.peering,
            ready_flag=ready,
        )
    finally:
        health.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
