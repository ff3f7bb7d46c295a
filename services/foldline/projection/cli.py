"""``foldline projector`` and ``foldline projection status``.

    foldline projector --projection foldline.examples.invoices.views:InvoiceList \\
        [--database sqlite:///views.db | postgresql://...] [--aggregate-name NAME] [--view-name NAME]
    foldline projection status [--projection PATH | --view NAME] [--database URL] [--json]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import structlog

log = structlog.get_logger("foldline.cli")


def cmd_projector(args: argparse.Namespace) -> int:
    from foldline.projection.api import load_projection
    from foldline.projection.sql import redact
    from foldline.projection.wiring import build_projector
    from foldline.service import serve_when_built
    from foldline.settings import ProjectorSettings

    if args.journal:
        from foldline.projection.journal import journal_projection

        spec = journal_projection(args.journal, aggregate_name=args.aggregate_name)
    else:
        spec = load_projection(args.projection, aggregate_name=args.aggregate_name, view_name=args.view_name)
    settings = ProjectorSettings.from_env()
    if args.database:
        settings = settings.with_changes(database=args.database)
    if args.http_port is not None:
        settings = settings.with_changes(http_port=args.http_port)
    log.info(
        "settings",
        view=spec.view,
        revision=spec.revision,
        aggregate=spec.aggregate,
        database=redact(settings.database),
        kafka=settings.kafka.bootstrap_servers,
    )
    # The database (or broker) may be away at start: wait for it, live and not ready, instead of exiting.
    return serve_when_built(lambda: build_projector(spec, settings), settings.http_port)


def cmd_status(args: argparse.Namespace) -> int:
    from foldline.clients import verify_access
    from foldline.projection.api import load_projection
    from foldline.projection.status import format_table, kafka_end_offsets, view_status
    from foldline.projection.target import open_store
    from foldline.settings import ProjectorSettings

    settings = ProjectorSettings.from_env()
    verify_access(settings.kafka)  # a refused login: KafkaAuthenticationError with the broker's reason
    store = open_store(args.database or settings.database)
    try:
        if args.projection:
            views = [load_projection(args.projection, aggregate_name=args.aggregate_name, view_name=args.view).view]
        elif args.view:
            views = [args.view]
        else:
            views = store.views()
        with kafka_end_offsets(settings.kafka) as ends:
            statuses = [view_status(store, view, ends) for view in views]
    finally:
        store.close()
    if args.json:
        print(json.dumps([s.to_json() for s in statuses], indent=2))
    else:
        print(format_table(statuses))
    return 0


def register(sub: Any) -> None:
    """Add ``projector`` and ``projection`` to the ``foldline`` parser."""
    p = sub.add_parser("projector", help="run a projection: a view fed from an aggregate's snapshots or events")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--projection", help="import path, e.g. foldline.examples.invoices.views:InvoiceList")
    which.add_argument(
        "--journal",
        metavar="AGGREGATE",
        help="run the built-in event journal of an aggregate (import path, e.g. foldline.examples.invoices:Invoices):"
        " every event in the database, which the gateway's history and state-at-version routes read",
    )
    p.add_argument("--database", help="sqlite:///path.db or postgresql://...; default $FOLDLINE_PROJECTION_DATABASE")
    p.add_argument("--aggregate-name", help="read the topics of this aggregate name instead of the class's")
    p.add_argument("--view-name", help="write this view instead of the class's name")
    p.add_argument("--http-port", type=int, help="health and metrics port; default $FOLDLINE_HTTP_PORT or 8080")
    p.set_defaults(func=cmd_projector)

    p = sub.add_parser("projection", help="inspect projections")
    actions = p.add_subparsers(dest="action", required=True)
    s = actions.add_parser("status", help="active and building revision, rebuild progress and lag of views")
    s.add_argument("--projection", help="import path of the projection (its view), or use --view")
    s.add_argument("--view", help="a view name; without this or --projection: every view in the database")
    s.add_argument("--aggregate-name", help="as given to the projector")
    s.add_argument("--database", help="default $FOLDLINE_PROJECTION_DATABASE")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_status)
