"""The operator's own settings, from ``FOLDLINE_OPERATOR_*`` variables (command-line flags override)."""

from __future__ import annotations

import argparse
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class OperatorConfig:
    #: Every resource is reconciled this often even when nothing changed (level-triggered): drift of owned
    #: objects is repaired and lag, autoscaling and rebuild progress are refreshed.
    resync_seconds: float = 30.0
    #: Namespaces to watch; empty watches the whole cluster.
    namespaces: tuple[str, ...] = ()
    #: kopf peering: only the live operator with the highest priority acts.
    peering: str = "foldline"
    priority: int = 0
    peering_lifetime: int = 60
    standalone: bool = False
    http_port: int = 8080
    kafka_timeout: float = 15.0
    #: Server-side watch timeout, and the client's (a bit longer): a silent connection is re-established.
    watch_server_timeout: int = 300
    watch_client_timeout: int = 330

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env

        def get(name: str, default: str) -> str:
            return env.get(f"FOLDLINE_OPERATOR_{name}", "").strip() or default

        priority = get("PRIORITY", "")
        return cls(
            resync_seconds=float(get("RESYNC_SECONDS", str(cls.resync_seconds))),
            namespaces=tuple(n.strip() for n in get("NAMESPACES", "").split(",") if n.strip()),
            peering=get("PEERING", cls.peering),
            # Distinct priorities let exactly one replica act; kopf pauses every peer on a tie.
            priority=int(priority) if priority else random.randint(1, 1_000_000),
            peering_lifetime=int(get("PEERING_LIFETIME", str(cls.peering_lifetime))),
            standalone=get("STANDALONE", "false").lower() in ("1", "true", "yes"),
            http_port=int(env.get("FOLDLINE_HTTP_PORT", "").strip() or cls.http_port),
            kafka_timeout=float(get("KAFKA_TIMEOUT", str(cls.kafka_timeout))),
            watch_server_timeout=int(get("WATCH_SERVER_TIMEOUT", str(cls.watch_server_timeout))),
            watch_client_timeout=int(get("WATCH_CLIENT_TIMEOUT", str(cls.watch_client_timeout))),
        )


def parse_args(argv: Sequence[str] | None, env: Mapping[str, str] | None = None) -> tuple[OperatorConfig, str | None]:
    """(config, log format) from flags over the environment."""
    base = OperatorConfig.from_env(env)
    parser = argparse.ArgumentParser(prog="foldline-operator", description="Reconciles EventSourcedAggregate "
                                     "and Projection resources. Settings: FOLDLINE_OPERATOR_* (docs/operator.md).")
    parser.add_argument("--namespace", action="append", help="watch only this namespace (repeatable)")
    parser.add_argument("--resync-seconds", type=float)
    parser.add_argument("--peering", help="name of the ClusterKopfPeering object")
    parser.add_argument("--priority", type=int, help="peering priority (default: random)")
    parser.add_argument("--standalone", action="store_true", help="no peering: for a single local operator")
    parser.add_argument("--http-port", type=int, help="/healthz, /readyz and /metrics (0 picks a free port)")
    parser.add_argument("--log-format", choices=("json", "console"))
    args = parser.parse_args(argv)
    flags = {"resync_seconds": args.resync_seconds, "namespaces": tuple(args.namespace or ()) or None,
             "peering": args.peering, "priority": args.priority, "standalone": args.standalone or None,
             "http_port": args.http_port}
    return replace(base, **{k: v for k, v in flags.items() if v is not None}), args.log_format
