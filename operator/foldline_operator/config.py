"""The operator's own settings, from ``FOLDLINE_OPERATOR_*`` variables (command-line flags override)."""

from __future__ import annotations

import argparse
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from foldline.settings import env_float, env_int, env_str
from foldline_operator.databases import DatabasePolicy


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
    #: Bound of every Kafka admin call (and connection set-up) and database connection the operator makes:
    #: a pass against an unreachable dependency holds one of the worker threads at most about this long.
    kafka_timeout: float = 5.0
    database_timeout: float = 5.0
    #: A resource whose Kafka or database was unreachable is resynced after growing delays (base, 2 x base...,
    #: at most max); edits of the resource and drift of what it owns still get a pass at once.
    backoff_base_seconds: float = 10.0
    backoff_max_seconds: float = 300.0
    #: /healthz fails once kopf's event loop has not run its heartbeat task for this long (a stuck loop).
    liveness_seconds: float = 30.0
    #: Server-side watch timeout, and the client's (a bit longer): a silent connection is re-established.
    watch_server_timeout: int = 300
    watch_client_timeout: int = 330
    #: Projection databases the operator may connect to (``databases.DatabasePolicy``): admin-named hosts,
    #: and a directory of SQLite files it may read (local development only).
    database_hosts: tuple[str, ...] = ()
    sqlite_dir: str | None = None

    @property
    def database_policy(self) -> DatabasePolicy:
        return DatabasePolicy(self.database_hosts, self.sqlite_dir)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        return cls(
            resync_seconds=env_float(env, "OPERATOR_RESYNC_SECONDS", cls.resync_seconds),
            namespaces=_names(env_str(env, "OPERATOR_NAMESPACES", "")),
            peering=env_str(env, "OPERATOR_PEERING", cls.peering),
            # Distinct priorities let exactly one replica act; kopf pauses every peer on a tie.
            priority=env_int(env, "OPERATOR_PRIORITY", random.randint(1, 1_000_000)),
            peering_lifetime=env_int(env, "OPERATOR_PEERING_LIFETIME", cls.peering_lifetime, minimum=1),
            standalone=env_str(env, "OPERATOR_STANDALONE", "false").lower() in ("1", "true", "yes"),
            http_port=env_int(env, "HTTP_PORT", cls.http_port),
            kafka_timeout=env_float(env, "OPERATOR_KAFKA_TIMEOUT", cls.kafka_timeout),
            database_timeout=env_float(env, "OPERATOR_DATABASE_TIMEOUT", cls.database_timeout),
            backoff_base_seconds=env_float(env, "OPERATOR_BACKOFF_BASE_SECONDS", cls.backoff_base_seconds),
            backoff_max_seconds=env_float(env, "OPERATOR_BACKOFF_MAX_SECONDS", cls.backoff_max_seconds),
            liveness_seconds=env_float(env, "OPERATOR_LIVENESS_SECONDS", cls.liveness_seconds),
            watch_server_timeout=env_int(env, "OPERATOR_WATCH_SERVER_TIMEOUT", cls.watch_server_timeout, minimum=1),
            watch_client_timeout=env_int(env, "OPERATOR_WATCH_CLIENT_TIMEOUT", cls.watch_client_timeout, minimum=1),
            database_hosts=_names(env_str(env, "OPERATOR_DATABASE_HOSTS", "")),
            sqlite_dir=env_str(env, "OPERATOR_SQLITE_DIR", "") or None,
        )


def _names(value: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in value.split(",") if n.strip())


def parse_args(argv: Sequence[str] | None, env: Mapping[str, str] | None = None) -> tuple[OperatorConfig, str | None]:
    """(config, log format) from flags over the environment."""
    base = OperatorConfig.from_env(env)
    parser = argparse.ArgumentParser(
        prog="foldline-operator",
        description="Reconciles EventSourcedAggregate "
        "and Projection resources. Settings: FOLDLINE_OPERATOR_* (docs/operator.md).",
    )
    parser.add_argument("--namespace", action="append", help="watch only this namespace (repeatable)")
    parser.add_argument("--resync-seconds", type=float)
    parser.add_argument("--peering", help="name of the ClusterKopfPeering object")
    parser.add_argument("--priority", type=int, help="peering priority (default: random)")
    parser.add_argument("--standalone", action="store_true", help="no peering: for a single local operator")
    parser.add_argument("--http-port", type=int, help="/healthz, /readyz and /metrics (0 picks a free port)")
    parser.add_argument("--log-format", choices=("json", "console"))
    args = parser.parse_args(argv)
    flags = {
        "resync_seconds": args.resync_seconds,
        "namespaces": tuple(args.namespace or ()) or None,
        "peering": args.peering,
        "priority": args.priority,
        "standalone": args.standalone or None,
        "http_port": args.http_port,
    }
    return replace(base, **{k: v for k, v in flags.items() if v is not None}), args.log_format
