"""``foldline policy``: the exactly-once worker of one policy."""

from __future__ import annotations

import argparse
from typing import Any

import structlog

log = structlog.get_logger("foldline.cli")


def cmd_policy(args: argparse.Namespace) -> int:
    from foldline.policies import load_policy
    from foldline.policy.wiring import build_policy_worker
    from foldline.service import serve
    from foldline.settings import PolicySettings
    from foldline.topics import TopicNames, describe_partitions, ensure_topics, policy_topics

    spec = load_policy(args.policy)
    settings = PolicySettings.from_env()
    log.info("settings", policy=spec.name, settings=repr(settings))
    if args.create_topics:
        from confluent_kafka.admin import AdminClient

        from foldline.errors import TopicMismatchError

        admin = AdminClient(settings.kafka.client_config())
        events = {TopicNames(name).events: name for name in spec.sources}
        found = describe_partitions(admin, events)
        missing = sorted(set(events) - set(found))
        if missing:
            raise TopicMismatchError(f"the source events topics do not exist yet: {', '.join(missing)}")
        ensure_topics(admin, policy_topics(spec.name, {events[t]: n for t, n in found.items()}))
    return serve(build_policy_worker(spec, settings), settings.http_port)


def register(sub: Any) -> None:
    """Add ``policy`` to the ``foldline`` parser."""
    p = sub.add_parser("policy", help="run the exactly-once worker of a policy (process manager)")
    p.add_argument("--policy", required=True, help="import path, e.g. foldline.examples.invoices:ChargeOnSend")
    p.add_argument(
        "--create-topics", action="store_true", help="create the policy's state and dead-letter topics if missing"
    )
    p.set_defaults(func=cmd_policy)
