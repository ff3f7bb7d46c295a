"""``foldline schema dump|check``: record the wire schema of aggregates and policies, and hold the code to it.

Exit codes: 0 compatible (or written), 1 an incompatible change (each printed, naming the type and the
field), 2 bad usage or input (a missing or unparsable file, a module that cannot be imported; one line
on stderr through ``foldline.cli.main``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from foldline.errors import ConfigurationError
from foldline.schema.compat import Comparison
from foldline.schema.files import (
    DEFAULT_FILE,
    check_schema_file,
    code_schema,
    compare_with_code,
    read_schema_file,
    recorded_targets,
    write_schema_file,
)
from foldline.schema.wire import render


def _report(comparison: Comparison) -> None:
    for problem in comparison.problems:
        print(f"incompatible: {problem}", file=sys.stderr)
    for change in comparison.changes:
        print(f"changed (compatible): {change}")


def cmd_dump(args: argparse.Namespace) -> int:
    path = args.file
    recorded = read_schema_file(path) if Path(path).exists() else None
    aggregates, policies = args.aggregate, args.policy
    if recorded is None and not aggregates and not policies:
        raise ConfigurationError(f"{path} does not exist yet: name what to dump with --aggregate/--policy")
    if recorded is not None:  # what is not named on the command line, the file's list says
        aggregates = recorded_targets(recorded, "aggregates") if aggregates is None else aggregates
        policies = recorded_targets(recorded, "policies") if policies is None else policies
    if recorded is None:
        current = code_schema(aggregates or [], policies or [])
    else:
        current, comparison = compare_with_code(recorded, aggregates or [], policies or [])
        if comparison.problems and not args.force:
            _report(comparison)
            print(
                f"foldline schema: {path} not written: the code changed incompatibly "
                "(--force records it anyway; the readers of old records will fail)",
                file=sys.stderr,
            )
            return 1
    if args.stdout:
        sys.stdout.write(render(current))
        return 0
    changed = write_schema_file(path, current)
    kinds = sum(len(a["commands"]) + len(a["events"]) + 1 for a in current["aggregates"].values())
    print(
        f"{'wrote' if changed else 'unchanged'} {path}: {len(current['aggregates'])} aggregate(s), "
        f"{len(current['policies'])} policy(ies), {kinds} aggregate type(s)"
    )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    comparison = check_schema_file(args.file, args.aggregate, args.policy)
    _report(comparison)
    if comparison.problems:
        print(
            f"foldline schema: {len(comparison.problems)} incompatible change(s) against {args.file}",
            file=sys.stderr,
        )
        return 1
    note = " (run 'foldline schema dump' to record the compatible changes)" if comparison.changes else ""
    print(f"ok: the code is compatible with {args.file}{note}")
    return 0


def register(sub: Any) -> None:
    """Add ``schema`` to the ``foldline`` parser."""
    p = sub.add_parser("schema", help="record the wire schema of commands, events and states; check changes")
    actions = p.add_subparsers(dest="schema_command", required=True)

    def targets(q: argparse.ArgumentParser, what: str) -> None:
        q.add_argument("--file", default=DEFAULT_FILE, help=f"the schema file (default: {DEFAULT_FILE})")
        q.add_argument("--aggregate", action="append", metavar="MODULE:NAME", help=f"an aggregate to {what}")
        q.add_argument("--policy", action="append", metavar="MODULE:NAME", help=f"a policy to {what}")

    q = actions.add_parser(
        "dump",
        help="write the schema file (the aggregates and policies given, or the ones the file lists)",
        description="Refuses (exit 1) to overwrite a file the code is incompatible with, unless --force.",
    )
    targets(q, "dump")
    q.add_argument("--force", action="store_true", help="record an incompatible change anyway")
    q.add_argument("--stdout", action="store_true", help="print the schema instead of writing the file")
    q.set_defaults(func=cmd_dump)

    q = actions.add_parser(
        "check",
        help="compare the code with the schema file; exit 1 on an incompatible change",
        description="--aggregate replaces the file's list of aggregates, --policy its list of policies.",
    )
    targets(q, "check (instead of the file's)")
    q.set_defaults(func=cmd_check)
