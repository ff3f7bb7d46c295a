"""``foldline gateway``: the HTTP gateway of one or more aggregates and their views."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from typing import Any

from foldline.gateway.views import ViewCatalog


def cmd_gateway(args: argparse.Namespace, *, catalog: Callable[[], ViewCatalog] | None = None) -> int:
    from foldline.gateway.server import build_gateway, serve
    from foldline.settings import GatewaySettings

    settings = GatewaySettings.from_env()
    changes: dict[str, Any] = {}
    if args.port is not None:
        changes["port"] = args.port
    if args.host is not None:
        changes["host"] = args.host
    gateway = build_gateway(
        args.aggregate,
        settings.with_changes(**changes),
        projections=args.projection or (),
        database=args.database,
        catalog=catalog() if catalog and args.database else None,
    )
    return serve(gateway)


def register(sub: Any, *, catalog: Callable[[], ViewCatalog] | None = None) -> None:
    """Add ``gateway``; ``catalog`` gives the projections' views (``foldline.cli`` passes the projector's)."""
    p = sub.add_parser(
        "gateway",
        help="serve commands, results, views and streams over HTTP",
        description="The HTTP gateway: POST commands and wait for their results, GET view rows "
        "(read-after-write with min_version), and Server-Sent Event streams. "
        "Settings: FOLDLINE_GATEWAY_* (see docs/gateway.md).",
    )
    p.add_argument(
        "--aggregate",
        action="append",
        required=True,
        help="import path of an aggregate, e.g. foldline.examples.invoices:Invoices (repeatable)",
    )
    p.add_argument("--projection", action="append", help="import path of a projection whose view to serve (repeatable)")
    p.add_argument("--database", help="the projection database: sqlite:///path or postgresql://...")
    p.add_argument("--port", type=int, help="default: FOLDLINE_GATEWAY_PORT or 8000")
    p.add_argument("--host", help="default: FOLDLINE_GATEWAY_HOST or 0.0.0.0")
    p.set_defaults(func=functools.partial(cmd_gateway, catalog=catalog))
