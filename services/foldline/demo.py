"""``foldline demo``: the whole platform on this machine, and an invoice walked through its life.

Nothing to configure: it starts the development Kafka broker (or uses ``FOLDLINE_KAFKA_BOOTSTRAP``),
creates the invoices topics, and runs a command handler, four projectors (invoice list, line items,
customer totals, the event journal) into SQLite under ``.cache/demo/`` and the gateway, each as a child
process. Once all are ready it walks a fresh invoice from creation to paid over HTTP, printing every command, its
result and the view row read back with ``min_version``. Then it serves until Ctrl-C (or, with
``--once``, stops at once) and stops every child with SIGTERM, and the broker if it started it
(``--keep-kafka`` leaves it running for the next run; ``make kafka-down`` stops it then).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from foldline.errors import ConfigurationError, FoldlineError, WaitTimeoutError

AGGREGATE = "foldline.examples.invoices:Invoices"
VIEWS = {"invoice-list": "InvoiceList", "invoice-line-items": "InvoiceLineItems", "customer-totals": "CustomerTotals"}
PARTITIONS = 3


def free_port(preferred: int = 0) -> int:
    """``preferred`` if it is free on loopback, else any free port."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise ConfigurationError("no free TCP port on 127.0.0.1")


@dataclass
class Child:
    """One ``foldline`` subcommand as a child process in its own session, with its log in a file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    ready_url: str

    @classmethod
    def start(cls, name: str, args: list[str], env: dict[str, str], log: Path, ready_url: str) -> Child:
        with log.open("ab") as out:
            # Its own session: Ctrl-C reaches the demo only, which stops the children in order.
            proc = subprocess.Popen(
                [sys.executable, "-m", "foldline.cli", *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return cls(name, proc, log, ready_url)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ready(self) -> bool:
        import httpx

        try:
            return httpx.get(self.ready_url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, grace: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(10)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def wait_ready(children: list[Child], timeout: float, out: TextIO) -> None:
    pending = list(children)
    deadline = time.monotonic() + timeout
    while pending:
        for child in list(pending):
            if not child.alive():
                raise ConfigurationError(
                    f"{child.name} exited with {child.proc.returncode}; its log "
                    f"({child.log}) ends with:\n{child.tail()}"
                )
            if child.ready():
                print(f"  {child.name:<30} ready", file=out, flush=True)
                pending.remove(child)
        if pending and time.monotonic() > deadline:
            names = ", ".join(c.name for c in pending)
            raise WaitTimeoutError(f"not ready within {timeout:.0f}s: {names}; see the logs in {pending[0].log.parent}")
        time.sleep(0.2)


def prepare_run_dir(root: Path) -> Path:
    """A directory for this run; those of earlier runs whose demo is gone are removed."""
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("run-*"):
        pid = old.name.removeprefix("run-")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    run = root / f"run-{os.getpid()}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    return run


def start_stack(bootstrap: str, run: Path, gateway_port: int, out: TextIO) -> list[Child]:
    base_env = {
        **os.environ,
        "FOLDLINE_KAFKA_BOOTSTRAP": bootstrap,
        "FOLDLINE_LOG_FORMAT": "json",
        "FOLDLINE_STATE_DIR": str(run / "state"),
        "FOLDLINE_COMMIT_INTERVAL_MS": "10",
        "FOLDLINE_PROJECTION_BATCH_WAIT_MS": "10",
        "FOLDLINE_GATEWAY_HOST": "127.0.0.1",
    }
    database = f"sqlite:///{run / 'views.db'}"
    children: list[Child] = []

    def start(name: str, args: list[str], port: int, **env: str) -> None:
        children.append(
            Child.start(name, args, {**base_env, **env}, run / f"{name}.log", f"http://127.0.0.1:{port}/readyz")
        )

    port = free_port()
    start("command-handler", ["command-handler", "--aggregate", AGGREGATE], port, FOLDLINE_HTTP_PORT=str(port))
    for view, cls in VIEWS.items():
        port = free_port()
        start(
            f"projector {view}",
            [
                "projector",
                "--projection",
                f"foldline.examples.invoices.views:{cls}",
                "--database",
                database,
                "--http-port",
                str(port),
            ],
            port,
        )
    port = free_port()
    start(
        "projector invoices-journal",
        ["projector", "--journal", AGGREGATE, "--database", database, "--http-port", str(port)],
        port,
    )
    gateway = ["gateway", "--aggregate", AGGREGATE, "--database", database, "--port", str(gateway_port)]
    for cls in VIEWS.values():
        gateway += ["--projection", f"foldline.examples.invoices.views:{cls}"]
    start("gateway", gateway, gateway_port)
    print(f"  logs and views.db in {run}", file=out, flush=True)
    return children


def stop_stack(children: list[Child], out: TextIO) -> bool:
    """SIGTERM the gateway first, then the projectors, then the handler; True if all exited cleanly."""
    clean = True
    for child in reversed(children):
        code = child.stop()
        clean &= code == 0
        print(f"  {child.name:<30} stopped ({'ok' if code == 0 else f'exit {code}'})", file=out, flush=True)
    return clean


class Interrupted(Exception):
    """Ctrl-C or SIGTERM reached the demo: stop everything."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def cmd_demo(args: argparse.Namespace) -> int:
    from foldline.dev.kafka import DevKafka, default_cache_dir
    from foldline.settings import KafkaSettings
    from foldline.topics import aggregate_topics, ensure_topics

    out = sys.stdout
    print("foldline demo: Kafka, a command handler, four projectors and the gateway on this machine\n", file=out)
    bootstrap = os.environ.get("FOLDLINE_KAFKA_BOOTSTRAP", "").strip()
    started_broker: DevKafka | None = None
    if bootstrap:
        print(f"  broker {bootstrap} (FOLDLINE_KAFKA_BOOTSTRAP)", file=out, flush=True)
    else:
        print("  starting the development Kafka broker (the first run downloads its jars) ...", file=out, flush=True)
        broker = DevKafka()
        started_broker = None if broker.is_running() else broker
        bootstrap = broker.start()
        print(f"  broker {bootstrap}", file=out, flush=True)
    ensure_topics(
        {**KafkaSettings.from_env().client_config(), "bootstrap.servers": bootstrap},
        aggregate_topics("invoices", PARTITIONS),
    )
    print(f"  topics invoices.* ({PARTITIONS} partitions)", file=out, flush=True)
    run = prepare_run_dir(default_cache_dir() / "demo")
    port = free_port(args.port)
    url = f"http://127.0.0.1:{port}"
    children: list[Child] = []
    ok = False
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        children = start_stack(bootstrap, run, port, out)
        wait_ready(children, args.ready_timeout, out)
        ok = walk(url, f"inv-{time.strftime('%Y%m%d')}-{uuid.uuid4().hex[:6]}", out)
        if not args.once and ok:
            print(
                f"\nThe gateway serves {url}  (the console: {url}/ ; OpenAPI: {url}/openapi.json)\n"
                f'  foldline submit invoices inv-42 CreateInvoice \'{{"customer": "You", "currency": "EUR", '
                f'"issue_date": "2026-01-01", "due_date": "2026-02-01"}}\' --gateway {url}\n'
                f"  foldline get invoice-list --gateway {url}\n"
                f"  foldline history invoices inv-42 --gateway {url}\n"
                f"  foldline state invoices inv-42 --version 1 --gateway {url}\n"
                f"  foldline tail invoices.command-results --from-beginning\n"
                "Ctrl-C stops everything"
                + (" (the Kafka broker too)." if started_broker is not None and not args.keep_kafka else "."),
                file=out,
                flush=True,
            )
            watch(children)
    except Interrupted as stop:
        print(f"\n{stop} received", file=out, flush=True)
        ok = ok and not args.once
    except FoldlineError as exc:
        print(f"\ndemo failed: {exc}", file=out, flush=True)
        ok = False
    finally:
        for sig in previous:  # stopping the children is not interrupted by a second Ctrl-C
            signal.signal(sig, signal.SIG_IGN)
        print("\nstopping", file=out, flush=True)
        clean = stop_stack(children, out)
        if started_broker is not None and not args.keep_kafka:
            print("  stopping the Kafka broker this demo started", file=out, flush=True)
            started_broker.stop()
        elif started_broker is not None or not os.environ.get("FOLDLINE_KAFKA_BOOTSTRAP"):
            print("  the Kafka broker keeps running (stop it with `make kafka-down`)", file=out, flush=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if ok and clean else 1


def watch(children: list[Child]) -> None:
    """Until interrupted; a child that exits on its own ends the demo as a failure."""
    while True:
        for child in children:
            if not child.alive():
                raise ConfigurationError(
                    f"{child.name} exited unexpectedly ({child.proc.returncode}); its log ends with:\n{child.tail()}"
                )
        time.sleep(0.3)


@dataclass
class Step:
    title: str
    type: str
    payload: dict[str, Any] = field(default_factory=dict)
    expect: int = 200
    view: str = "invoice-list"


def invoice_life(today: date) -> list[Step]:
    def item(line_id: str, text: str, quantity: int, price: str) -> dict[str, Any]:
        return {"line_id": line_id, "description": text, "quantity": quantity, "unit_price": price}

    def pay(payment_id: str, amount: str) -> dict[str, Any]:
        return {"payment_id": payment_id, "amount": amount, "currency": "EUR"}

    return [
        Step(
            "create a draft invoice",
            "CreateInvoice",
            {
                "customer": "ACME GmbH",
                "currency": "EUR",
                "issue_date": today.isoformat(),
                "due_date": (today + timedelta(days=30)).isoformat(),
            },
        ),
        Step(
            "add a line: 3 days of consulting",
            "AddLineItem",
            item("a", "Consulting (days)", 3, "100.00"),
            view="invoice-line-items",
        ),
        Step("add a line: travel", "AddLineItem", item("b", "Travel", 1, "45.50"), view="invoice-line-items"),
        Step("remove the travel line again", "RemoveLineItem", {"line_id": "b"}, view="invoice-line-items"),
        Step("send the invoice", "SendInvoice"),
        Step("record a partial payment of 100.00", "RecordPayment", pay("p1", "100.00")),
        Step("try to overpay: 250.00 against a balance of 200.00", "RecordPayment", pay("p2", "250.00"), expect=422),
        Step("record the final payment of 200.00", "RecordPayment", pay("p3", "200.00")),
    ]


def describe_rows(view: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)"
    if view == "invoice-line-items":
        return "; ".join(
            f"{r['line_id']}: {r['description']} {r['quantity']} x {r['unit_price']} = {r['amount']}" for r in rows
        )
    skip = {"aggregate_id", "aggregate_version", "id", "issue_date", "due_date"}
    return " ".join(f"{k}={v}" for k, v in rows[0].items() if k not in skip)


def walk(url: str, invoice_id: str, out: TextIO) -> bool:
    """Walk one invoice through its life over HTTP; False (after saying why) on any surprise."""
    import httpx

    token = os.environ.get("FOLDLINE_GATEWAY_TOKEN", "").strip()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    print(f"\nInvoice {invoice_id}, from draft to paid, through {url}:", file=out, flush=True)
    version = 0
    with httpx.Client(base_url=url, headers=headers, timeout=60.0) as client:
        for n, step in enumerate(invoice_life(date.today()), 1):
            body = {"aggregate_id": invoice_id, "type": step.type, "payload": step.payload}
            print(
                f"\n{n}. {step.title}\n   POST /aggregates/invoices/commands  {step.type} {json.dumps(step.payload)}",
                file=out,
                flush=True,
            )
            r = client.post("/aggregates/invoices/commands", json=body, params={"timeout": "30"})
            result = r.json()
            if r.status_code != step.expect:
                print(f"   -> {r.status_code} {result}  (expected {step.expect})", file=out, flush=True)
                return False
            if result["status"] != "accepted":
                print(
                    f"   -> {r.status_code} {result['status']}: {result['reason']}  (as expected; version stays "
                    f"{result['version']})",
                    file=out,
                    flush=True,
                )
                continue
            version = result["version"]
            print(
                f"   -> {r.status_code} accepted, version {version} ({', '.join(result['events'])})",
                file=out,
                flush=True,
            )
            if not read_view(client, step.view, invoice_id, version, out):
                return False
        print("\nTotals of the customer, from the events:", file=out, flush=True)
        if not read_view(client, "customer-totals", invoice_id, version, out, customer="ACME GmbH"):
            return False
        return read_history(client, invoice_id, version, out)


def read_history(client: Any, invoice_id: str, version: int, out: TextIO) -> bool:
    """The invoice's timeline from the event journal, and its state two events in (time travel)."""
    print(f"\nHistory: GET /aggregates/invoices/{invoice_id}/events", file=out, flush=True)
    r = client.get(f"/aggregates/invoices/{invoice_id}/events", params={"min_version": str(version)})
    if r.status_code != 200:
        print(f"   -> {r.status_code} {r.text}", file=out, flush=True)
        return False
    for event in r.json()["events"]:
        print(f"   v{event['version']} {event['recorded_at']} {event['type']}", file=out, flush=True)
    r = client.get(f"/aggregates/invoices/{invoice_id}/state", params={"version": "2"})
    if r.status_code != 200:
        print(f"   -> {r.status_code} {r.text}", file=out, flush=True)
        return False
    state = r.json()["state"]
    print(
        f"   state at version 2: status={state['status']} lines={len(state['lines'])} (now: version {version})",
        file=out,
        flush=True,
    )
    return True


def read_view(client: Any, view: str, invoice_id: str, version: int, out: TextIO, **filters: str) -> bool:
    """Read the view as of ``version`` (read-after-write) and print its rows."""
    params = {**filters, "aggregate_id": invoice_id, "min_version": str(version), "timeout": "30"}
    r = client.get(f"/views/{view}/rows", params=params)
    if r.status_code != 200:
        print(f"   {view}: {r.status_code} {r.text}", file=out, flush=True)
        return False
    body = r.json()
    print(
        f"   GET /views/{view}/rows?aggregate_id={invoice_id}&min_version={version}\n"
        f"   {view} @v{body['version']}: {describe_rows(view, body['rows'])}",
        file=out,
        flush=True,
    )
    return bool(body["rows"])


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="broker, handler, projectors and gateway here; walk an invoice through its life")
    p.add_argument("--once", action="store_true", help="walk one invoice, then stop everything and exit")
    p.add_argument("--port", type=int, default=8000, help="gateway port if free (default 8000, else any free port)")
    p.add_argument(
        "--keep-kafka", action="store_true", help="leave the broker running at the end (stop it: make kafka-down)"
    )
    p.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for every process")
    p.set_defaults(func=cmd_demo)
