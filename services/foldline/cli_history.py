"""``foldline history`` and ``foldline state``: an aggregate's timeline and its state at any version.

    foldline history invoices inv-1                  # every event: version, time, type, command, payload
    foldline state invoices inv-1 --version 3        # the fold of the first 3 events
    foldline state invoices inv-1 --at 2026-12-01T10:00:00Z

Both ask the gateway (``--gateway`` or ``FOLDLINE_GATEWAY_URL``), which reads the event journal projection.
Exit codes: 0 success, 2 an error (unknown aggregate or id, a version beyond the last, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import quote

from foldline.cli_client import _client, _error_text, _fail, _gateway_options, table


def _get(args: argparse.Namespace, what: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
    import httpx

    path = f"/aggregates/{quote(args.aggregate, safe='')}/{what}"  # the id as a query: any id, "commands" too
    try:
        with _client(args) as client:
            response = client.get(path, params={"aggregate_id": args.aggregate_id, **params})
    except httpx.HTTPError as exc:
        return _fail(f"cannot reach the gateway at {args.gateway}: {exc}"), {}
    if response.status_code != 200:
        return _fail(f"{response.status_code} {_error_text(response)}"), {}
    data: dict[str, Any] = response.json()
    return 0, data


def cmd_history(args: argparse.Namespace) -> int:
    params = {"limit": str(args.limit), "offset": str(args.offset)}
    if args.min_version is not None:
        params["min_version"] = str(args.min_version)
    code, data = _get(args, "events", params)
    if code:
        return code
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    rows = [_timeline_row(e) for e in data["events"]]
    print(table(rows, max_width=args.width))
    events = sum(1 for e in data["events"] if not e.get("gap"))
    print(f"{events} event(s) of {data['aggregate']} {data['aggregate_id']}; last version {data['version']}")
    gaps = [e for e in data["events"] if e.get("gap")]
    if gaps:
        print(f"{len(gaps)} gap(s): versions the journal lacks (records it could not read)", file=sys.stderr)
    return 0


def _timeline_row(e: dict[str, Any]) -> dict[str, Any]:
    if e.get("gap"):
        causes = "; ".join(f"{k.get('reason')}: {k.get('error')}" for k in e.get("skipped") or []) or "cause unknown"
        span = str(e["version"]) if e["version"] == e["to_version"] else f"{e['version']}-{e['to_version']}"
        return {"version": span, "recorded_at": "", "type": "(missing)", "command_id": "", "payload": causes}
    kind = e["type"] + (f" (schema {e['schema_version']})" if e["schema_version"] != 1 else "")
    if e.get("undecodable"):
        kind += " (undecodable here)"
    return {
        "version": e["version"],
        "recorded_at": e["recorded_at"],
        "type": kind,
        "command_id": e["command_id"],
        "payload": json.dumps(e["payload"], sort_keys=True),
    }


def cmd_state(args: argparse.Namespace) -> int:
    params: dict[str, str] = {}
    if args.version is not None:
        params["version"] = str(args.version)
    if args.at:
        params["at"] = args.at
    code, data = _get(args, "state", params)
    if code:
        return code
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"{data['aggregate']} {data['aggregate_id']} at version {data['version']} of {data['last_version']}")
    if data.get("recorded_at"):
        print(f"as of {data['recorded_at']}")
    print(json.dumps(data["state"], indent=2, sort_keys=True))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("history", help="an aggregate's events, from the gateway's event journal")
    p.add_argument("aggregate", help="aggregate name, e.g. invoices")
    p.add_argument("aggregate_id")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--min-version", type=int, help="wait until the journal holds this version")
    p.add_argument("--width", type=int, default=80, help="cut cells longer than this")
    _gateway_options(p, "seconds to wait for the gateway")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("state", help="an aggregate's state at a version or an instant (a fold of its events)")
    p.add_argument("aggregate", help="aggregate name, e.g. invoices")
    p.add_argument("aggregate_id")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="fold the first N events (default: all)")
    which.add_argument("--at", help="fold the events recorded up to this ISO 8601 time")
    _gateway_options(p, "seconds to wait for the gateway")
    p.set_defaults(func=cmd_state)
