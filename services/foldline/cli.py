"""The ``foldline`` command line: one entry point for every process and for a person at a terminal."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import structlog

from foldline.errors import FoldlineError

if TYPE_CHECKING:
    from foldline.gateway.views import ViewCatalog

log = structlog.get_logger("foldline.cli")
Command = Callable[[argparse.Namespace], int]

#: Modules that add subcommands through ``register(subparsers)``; one per area of the runtime.
_REGISTRARS: tuple[str, ...] = (
    "foldline.handler.cli",
    "foldline.policy.cli",
    "foldline.cli_client",
    "foldline.cli_history",
    "foldline.demo",
    "foldline.projection.cli",
    "foldline.schema.cli",
)


def projection_views() -> ViewCatalog:
    """The gateway serves the projector's views; neither package imports the other, so this composition
    root hands the gateway the projections' catalog."""
    from foldline.projection.target import ProjectionViews

    return ProjectionViews()


def cmd_topics(args: argparse.Namespace) -> int:
    from foldline.aggregate import load_aggregate
    from foldline.clients import verify_access
    from foldline.settings import KafkaSettings
    from foldline.topics import aggregate_topics, ensure_topics

    spec = load_aggregate(args.aggregate)
    kafka = KafkaSettings.from_env()
    verify_access(kafka)  # a refused login: KafkaAuthenticationError with the broker's reason
    report = ensure_topics(
        kafka.client_config(),
        aggregate_topics(spec.name, args.partitions, args.replication_factor),
        allow_partition_growth=args.allow_partition_growth,
    )
    for what in ("created", "grown", "reconfigured", "unchanged"):
        for name in getattr(report, what):
            print(f"{what:13} {name}")
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    if args.service == "kafka":
        from foldline.dev import kafka

        return kafka.main([args.action])
    from foldline.dev import postgres

    return postgres.main([args.action])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="foldline", description="Event sourcing on Apache Kafka.")
    parser.add_argument("--log-format", choices=("json", "console"), help="default: console on a terminal")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("topics", help="create or check an aggregate's topics")
    p.add_argument("--aggregate", required=True)
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--replication-factor", type=int, default=1)
    p.add_argument("--allow-partition-growth", action="store_true", help="growth remaps keys: opt in")
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser("dev", help="development services: a real Kafka broker, PostgreSQL")
    p.add_argument("service", choices=("kafka", "postgres"))
    p.add_argument("action", choices=("start", "stop", "status", "secure-env"), help="secure-env: kafka only")
    p.set_defaults(func=cmd_dev)

    import importlib

    for module in _REGISTRARS:
        importlib.import_module(module).register(sub)
    from foldline.gateway import cli as gateway_cli

    gateway_cli.register(sub, catalog=projection_views)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from foldline.observability.logging import configure_logging

    args = build_parser().parse_args(argv)
    configure_logging(args.log_format)
    func: Command = args.func
    try:
        return func(args)
    except FoldlineError as exc:
        print(f"foldline: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
