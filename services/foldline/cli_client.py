"""Commands for a person at a terminal: ``submit`` and ``get`` through the gateway, ``tail`` from Kafka.

    foldline submit invoices inv-1 CreateInvoice '{"customer": "ACME", ...}' [--expected-version N]
    foldline get invoice-list --aggregate-id inv-1 --min-version 3
    foldline tail invoices.command-results --from-beginning

The gateway is ``--gateway`` or ``FOLDLINE_GATEWAY_URL`` (default http://127.0.0.1:8000), with
``FOLDLINE_GATEWAY_TOKEN`` as the bearer token when set. ``tail`` talks to Kafka directly
(``FOLDLINE_KAFKA_BOOTSTRAP``). Exit codes: 0 success, 1 the command was not accepted, 2 an error.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import uuid
from datetime import datetime
from types import FrameType
from typing import Any, TextIO

DEFAULT_GATEWAY = "http://127.0.0.1:8000"


def _client(args: argparse.Namespace) -> Any:
    import httpx

    token = os.environ.get("FOLDLINE_GATEWAY_TOKEN", "").strip()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=args.gateway, headers=headers, timeout=httpx.Timeout(args.timeout + 10.0))


def _error_text(response: Any) -> str:
    try:
        error = response.json().get("error", {})
        return f"{error.get('code', 'error')}: {error.get('message', response.text)}"
    except (ValueError, AttributeError):
        return str(response.text).strip() or str(response.reason_phrase)


def _fail(message: str, out: TextIO = sys.stderr) -> int:
    print(f"foldline: {message}", file=out)
    return 2


# -- submit ------------------------------------------------------------------------------------------
def cmd_submit(args: argparse.Namespace) -> int:
    import httpx

    try:
        payload = json.loads(args.payload) if args.payload else {}
    except ValueError as exc:
        return _fail(f"the payload is not valid JSON: {exc}")
    body: dict[str, Any] = {
        "aggregate_id": args.aggregate_id,
        "type": args.type,
        "payload": payload,
        "command_id": args.command_id or uuid.uuid4().hex,
    }
    if args.expected_version is not None:
        body["expected_version"] = args.expected_version
    params = {"wait": "false" if args.no_wait else "true", "timeout": str(args.timeout)}
    try:
        with _client(args) as client:
            response = client.post(f"/aggregates/{args.aggregate}/commands", json=body, params=params)
    except httpx.HTTPError as exc:
        return _fail(f"cannot reach the gateway at {args.gateway}: {exc}")
    data = _json(response)
    if args.json:
        print(json.dumps(data, indent=2))
    where = f"{args.aggregate}/{args.aggregate_id} {args.type}"
    if response.status_code == 202:
        if not args.json:
            print(f"pending    {where}\ncommand    {body['command_id']}\nlocation   {response.headers.get('location')}")
        return 0
    if "status" not in data or "error" in data:
        return _fail(f"{response.status_code} {_error_text(response)}")
    if not args.json:
        print(describe_result(where, data))
    return 0 if data["status"] == "accepted" else 1


def _json(response: Any) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {"error": {"code": "not_json", "message": response.text}}
    return data if isinstance(data, dict) else {"value": data}


def describe_result(where: str, result: dict[str, Any]) -> str:
    status = result["status"]
    lines = [f"{status:<10} {where}"]
    if status == "accepted":
        events = ", ".join(result.get("events") or []) or "no events"
        lines.append(f"version    {result['version']}  ({events})")
    else:
        lines.append(f"reason     {result.get('reason')}  [{result.get('code')}]")
        lines.append(f"version    {result['version']} (unchanged)")
    if result.get("duplicate"):
        lines.append("duplicate  yes: this command id was handled before; its first result again")
    lines.append(f"command    {result['command_id']}")
    return "\n".join(lines)


# -- get -----------------------------------------------------------------------------------------------
def cmd_get(args: argparse.Namespace) -> int:
    import httpx

    params: dict[str, str] = {"limit": str(args.limit), "offset": str(args.offset)}
    for item in args.where or ():
        column, sep, value = item.partition("=")
        if not sep or not column:
            return _fail(f"--where takes column=value, got {item!r}")
        params[column] = value
    if args.aggregate_id:
        params["aggregate_id"] = args.aggregate_id
    if args.min_version is not None:
        params["min_version"] = str(args.min_version)
        params["timeout"] = str(args.timeout)
    if args.order_by:
        params["order_by"] = args.order_by
    try:
        with _client(args) as client:
            response = client.get(f"/views/{args.view}/rows", params=params)
    except httpx.HTTPError as exc:
        return _fail(f"cannot reach the gateway at {args.gateway}: {exc}")
    if response.status_code != 200:
        return _fail(f"{response.status_code} {_error_text(response)}")
    data = response.json()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(table(data["rows"]))
    suffix = f" (version {data['version']})" if "version" in data else ""
    print(f"{len(data['rows'])} row(s) of {args.view}{suffix}")
    return 0


def table(rows: list[dict[str, Any]], max_width: int = 40) -> str:
    """Rows as an aligned text table; long cells are cut with an ellipsis."""
    if not rows:
        return "(no rows)"
    columns = list(dict.fromkeys(key for row in rows for key in row))

    def cell(value: Any) -> str:
        text = "" if value is None else value if isinstance(value, str) else json.dumps(value, default=str)
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


# -- tail ----------------------------------------------------------------------------------------------
def describe_record(topic: str, value: bytes | None) -> str:
    """One readable line for a record of a foldline topic (or its raw text for any other topic)."""
    from foldline.errors import DecodeError
    from foldline.records import CommandEnvelope, CommandResult, EventRecord, SnapshotRecord, Status, loads

    def compact(data: Any, limit: int = 240) -> str:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
        return text if len(text) <= limit else text[: limit - 1] + "…"

    try:
        if topic.endswith(".commands"):
            c = CommandEnvelope.from_bytes(value)
            expected = "" if c.expected_version is None else f" expected_version={c.expected_version}"
            return f"command  {c.type}{expected} {compact(c.payload)}  id={c.command_id}"
        if topic.endswith(".command-results"):
            r = CommandResult.from_bytes(value)
            detail = ", ".join(r.events) if r.status == Status.ACCEPTED else f"{r.code}: {r.reason}"
            dup = " (duplicate)" if r.duplicate else ""
            return f"result   {r.status} v{r.version} {detail}{dup}  id={r.command_id}"
        if topic.endswith(".events"):
            e = EventRecord.from_bytes(value)
            return f"event    v{e.version} {e.type} {compact(e.payload)}"
        if topic.endswith(".snapshots"):
            s = SnapshotRecord.from_bytes(value)
            return f"snapshot v{s.version} {compact(s.state)}"
        if topic.endswith(".dead-letters"):
            d = loads(value, "dead letter")
            src, err = d.get("source", {}), d.get("error", {})
            return (
                f"dead-letter {err.get('code')}: {err.get('message')}  from {src.get('topic')} "
                f"p{src.get('partition')}@{src.get('offset')}"
            )
    except DecodeError as exc:
        return f"undecodable: {exc}"
    if value is None:
        return "(null)"
    return value.decode(errors="replace")


def cmd_tail(args: argparse.Namespace) -> int:
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition

    from foldline.clients import reader_config, verify_access
    from foldline.settings import KafkaSettings
    from foldline.topics import private_group

    kafka = KafkaSettings.from_env()
    verify_access(kafka)  # a refused login: KafkaAuthenticationError with the broker's reason
    stop = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C stops it even when started with SIGINT ignored (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    consumer = Consumer(reader_config(kafka, private_group("tail")))
    shown = 0
    try:
        meta = consumer.list_topics(args.topic, timeout=10.0).topics.get(args.topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return _fail(f"topic {args.topic!r} does not exist at {kafka.bootstrap_servers}")
        start = OFFSET_BEGINNING if args.from_beginning else OFFSET_END
        consumer.assign([TopicPartition(args.topic, p, start) for p in sorted(meta.partitions)])
        print(
            f"# {args.topic}: {len(meta.partitions)} partition(s), from the "
            f"{'beginning' if args.from_beginning else 'end'}; Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )
        while not stop and (args.max is None or shown < args.max):
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                print(f"# {msg.error()}", file=sys.stderr, flush=True)
                continue
            _, ts = msg.timestamp()
            when = datetime.fromtimestamp(ts / 1000).strftime("%H:%M:%S.%f")[:-3] if ts > 0 else "--:--:--"
            key = (msg.key() or b"").decode(errors="replace")
            line = describe_record(args.topic, msg.value())
            print(f"{when}  p{msg.partition()}@{msg.offset():<6} {key:<16} {line}", flush=True)
            shown += 1
    except KeyboardInterrupt:
        pass  # Ctrl-C: a clean stop
    except KafkaException as exc:
        return _fail(f"Kafka error: {exc}")
    finally:
        consumer.close()
    return 0


# -- registration -------------------------------------------------------------------------------------
def _gateway_options(p: argparse.ArgumentParser, timeout_help: str) -> None:
    p.add_argument(
        "--gateway",
        default=os.environ.get("FOLDLINE_GATEWAY_URL", DEFAULT_GATEWAY),
        help=f"gateway URL (default: FOLDLINE_GATEWAY_URL or {DEFAULT_GATEWAY})",
    )
    p.add_argument("--timeout", type=float, default=10.0, help=timeout_help)
    p.add_argument("--json", action="store_true", help="print the gateway's JSON answer")


def register(sub: Any) -> None:
    """Add the client subcommands to the ``foldline`` parser."""
    p = sub.add_parser("submit", help="send a command through the gateway and print its result")
    p.add_argument("aggregate", help="aggregate name, e.g. invoices")
    p.add_argument("aggregate_id")
    p.add_argument("type", help="command type, e.g. CreateInvoice")
    p.add_argument("payload", nargs="?", default="{}", help="the command's fields as a JSON object")
    p.add_argument("--expected-version", type=int, help="refuse (conflict) unless the aggregate is at N")
    p.add_argument("--command-id", help="idempotency key (default: a fresh one)")
    p.add_argument("--no-wait", action="store_true", help="return once Kafka has the command")
    _gateway_options(p, "seconds to wait for the result")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("get", help="read rows of a view through the gateway")
    p.add_argument("view", help="view name, e.g. invoice-list")
    p.add_argument("--aggregate-id")
    p.add_argument("--min-version", type=int, help="wait until the view has the aggregate at this version")
    p.add_argument("--where", action="append", metavar="COLUMN=VALUE", help="filter (repeatable)")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--order-by", help="a column; prefix - for descending")
    _gateway_options(p, "seconds to wait for --min-version")
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("tail", help="print a topic's records as readable lines (straight from Kafka)")
    p.add_argument("topic", help="e.g. invoices.command-results")
    p.add_argument("--from-beginning", action="store_true", help="start at the first record, not the end")
    p.add_argument("--max", type=int, help="stop after this many records")
    p.set_defaults(func=cmd_tail)
