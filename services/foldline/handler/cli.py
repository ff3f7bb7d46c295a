"""``foldline command-handler``: the exactly-once command handler of one aggregate."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import structlog

log = structlog.get_logger("foldline.cli")


def cmd_command_handler(args: argparse.Namespace) -> int:
    from foldline.aggregate import load_aggregate
    from foldline.clients import verify_access
    from foldline.handler.wiring import build_command_handler
    from foldline.handler.workers import become_worker, serve_workers, worker_index, worker_settings
    from foldline.service import serve
    from foldline.settings import HandlerSettings
    from foldline.topics import aggregate_topics, ensure_topics

    spec = load_aggregate(args.aggregate)  # in the supervisor too: a wrong path fails once, not per worker
    settings = HandlerSettings.from_env()
    index = worker_index()
    if index is not None:
        become_worker(index)
        settings = worker_settings(settings, index)
    log.info("settings", aggregate=spec.name, settings=repr(settings))
    if args.create_topics and index is None:
        verify_access(settings.kafka)
        ensure_topics(settings.kafka.client_config(), aggregate_topics(spec.name, args.partitions))
    if index is None and settings.workers > 1:
        argv = [sys.executable, "-m", "foldline.cli", "command-handler", "--aggregate", args.aggregate]
        return serve_workers(argv, settings)
    return serve(build_command_handler(spec, settings), settings.http_port)


def register(sub: Any) -> None:
    """Add ``command-handler`` to the ``foldline`` parser."""
    p = sub.add_parser("command-handler", help="run the exactly-once command handler of an aggregate")
    p.add_argument("--aggregate", required=True, help="import path, e.g. foldline.examples.invoices:Invoices")
    p.add_argument("--create-topics", action="store_true", help="create the aggregate's topics if missing")
    p.add_argument("--partitions", type=int, default=3)
    p.set_defaults(func=cmd_command_handler)
