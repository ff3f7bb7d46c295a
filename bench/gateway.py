"""Gateway benchmark: commands/s and end-to-end latency (HTTP POST → result in the answer) at fixed loads.

Open loop: sends are scheduled at fixed intervals (asyncio + httpx) whatever the answers do, and each
latency is measured from the send's scheduled time, so a slow answer cannot hide later queueing
(no coordinated omission). Everything runs on loopback: the real broker, a command handler and the
gateway as child processes (``foldline command-handler`` / ``foldline gateway``), this process as the
client. Prints one line per figure; never fails on a time.

    python -m bench.gateway
    FOLDLINE_BENCH_GATEWAY_SECONDS=10 FOLDLINE_BENCH_GATEWAY_RATES=500,1000,2000
    FOLDLINE_BENCH_GATEWAY_CLIENTS=httpx,raw   (the load generator: httpx, and bare asyncio streams)
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

from bench.support import REPO, broker, figure, free_port, load, new_aggregate, wait_until

CREATE = {"customer": "ACME Corporation", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}


def child(args: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    environ = {
        **os.environ,
        "FOLDLINE_LOG_FORMAT": "json",
        "FOLDLINE_LOG_LEVEL": "warning",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        **env,
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "foldline.cli", *args], env=environ, stdout=out, stderr=subprocess.STDOUT
        )


def ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class HttpxConnections:
    """Keep-alive connections, one ``httpx.AsyncClient`` each, all opened before the clock starts.

    One pooled client with hundreds of connections costs several ms of CPU per request in httpx's pool
    (measured here: 3.7 ms at 100 in flight against 0.7 ms with a client per connection), and opening a
    client costs ~20 ms (an SSL context), so either would make the load generator the thing measured.
    """

    name = "httpx"

    def __init__(self, url: str, size: int) -> None:
        self.url, self.size = url, size
        self.idle: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        self.clients: list[httpx.AsyncClient] = []

    async def open(self) -> None:
        for _ in range(self.size):
            client = httpx.AsyncClient(
                base_url=self.url, timeout=30.0, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1)
            )
            await client.get("/healthz")
            self.clients.append(client)
            self.idle.put_nowait(client)

    async def post(self, path: str, body: bytes) -> int:
        client = await self.idle.get()
        try:
            r = await client.post(path, content=body, headers={"content-type": "application/json"})
            return r.status_code
        finally:
            self.idle.put_nowait(client)

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()


class RawConnections:
    """The same load through bare asyncio streams speaking HTTP/1.1 keep-alive: ~10x less client CPU than
    httpx, so on a small machine the figures show the gateway rather than the load generator."""

    name = "raw asyncio"

    def __init__(self, url: str, size: int) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.host, self.port, self.size = host, int(port), size
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self.writers: list[asyncio.StreamWriter] = []

    async def open(self) -> None:
        for _ in range(self.size):
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self.writers.append(writer)
            self.idle.put_nowait((reader, writer))

    async def post(self, path: str, body: bytes) -> int:
        reader, writer = await self.idle.get()
        try:
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            return int(head[9:12])
        finally:
            self.idle.put_nowait((reader, writer))

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()


async def offered_load(connections, aggregate: str, rate: int, seconds: float, tag: str):
    """Send ``rate`` commands/s for ``seconds``: latencies (s) from each send's due time, statuses, elapsed."""
    latencies: list[float] = []
    statuses: Counter = Counter()
    path = f"/aggregates/{aggregate}/commands"

    async def one(i: int, due: float) -> None:
        body = json.dumps({"aggregate_id": f"{tag}-{i}", "type": "CreateInvoice", "payload": CREATE}).encode()
        try:
            status = await connections.post(path, body)
        except (httpx.HTTPError, OSError, asyncio.IncompleteReadError) as exc:
            statuses[type(exc).__name__] += 1
            return
        latencies.append(time.perf_counter() - due)
        statuses[status] += 1

    total = int(rate * seconds)
    interval = 1.0 / rate
    tasks = []
    start = time.perf_counter() + 0.01
    for i in range(total):
        due = start + i * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    return latencies, statuses, time.perf_counter() - start


def quantile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def cpu_seconds(pid: int) -> float:
    """A process's own CPU time (utime + stime, all its threads) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bench_rate(kind, url: str, aggregate: str, rate: int, seconds: float, pids: dict[str, int]) -> None:
    tag = uuid.uuid4().hex[:6]
    connections = kind(url, size=max(32, min(256, rate // 4)))
    await connections.open()  # connect before the clock starts
    try:
        await offered_load(connections, aggregate, rate, min(2.0, seconds), f"warm-{tag}")
        await asyncio.sleep(1.0)  # let the warm-up drain
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        latencies, statuses, elapsed = await offered_load(connections, aggregate, rate, seconds, f"r{rate}-{tag}")
        cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    finally:
        await connections.close()
    ok = statuses.get(200, 0)
    others = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=str) if k != 200) or "none"
    figure(
        f"gateway commands/s at {rate:,}/s offered ({kind.name})",
        ok / elapsed,
        "commands/s",
        f"{ok:,} accepted in {elapsed:.1f}s over {connections.size} connections; other answers: {others}",
    )
    figure(f"  POST→result p50 at {rate:,}/s ({kind.name})", quantile(latencies, 50) * 1000, "ms")
    figure(f"  POST→result p99 at {rate:,}/s ({kind.name})", quantile(latencies, 99) * 1000, "ms")
    figure(f"  POST→result max at {rate:,}/s ({kind.name})", max(latencies, default=float("nan")) * 1000, "ms", load())
    sent = max(1, sum(statuses.values()))
    for name, seconds_used in cpu.items():  # each process alone: its own CPU seconds per command sent
        figure(f"  {name} CPU per command at {rate:,}/s ({kind.name})", seconds_used / sent * 1e6, "µs", load())


def main() -> None:
    bootstrap = broker()
    seconds = float(os.environ.get("FOLDLINE_BENCH_GATEWAY_SECONDS", "10"))
    rates = [int(r) for r in os.environ.get("FOLDLINE_BENCH_GATEWAY_RATES", "500,1000,2000").split(",")]
    commit_ms = os.environ.get("FOLDLINE_COMMIT_INTERVAL_MS", "5")
    print(f"# gateway — {load()}; handler commit interval {commit_ms} ms, {seconds:.0f}s per load", flush=True)
    aggregate = new_aggregate(bootstrap, 3, prefix="inv-gw")
    path = f"tests.named_invoices:{aggregate.replace('-', '_')}"
    with tempfile.TemporaryDirectory(prefix="foldline-bench-gateway-") as tmp_dir:
        tmp = Path(tmp_dir)
        handler_port, gateway_port = free_port(), free_port()
        handler = child(
            ["command-handler", "--aggregate", path],
            tmp / "handler.log",
            FOLDLINE_KAFKA_BOOTSTRAP=bootstrap,
            FOLDLINE_STATE_DIR=str(tmp / "state"),
            FOLDLINE_HTTP_PORT=str(handler_port),
            FOLDLINE_COMMIT_INTERVAL_MS=commit_ms,
        )
        gateway = child(
            ["gateway", "--aggregate", path, "--port", str(gateway_port), "--host", "127.0.0.1"],
            tmp / "gateway.log",
            FOLDLINE_KAFKA_BOOTSTRAP=bootstrap,
        )
        url = f"http://127.0.0.1:{gateway_port}"
        try:
            if not wait_until(lambda: ready(f"http://127.0.0.1:{handler_port}/readyz") and ready(f"{url}/readyz"), 120):
                print("# the handler or gateway did not become ready; logs:", flush=True)
                for log in ("handler.log", "gateway.log"):
                    print((tmp / log).read_text()[-2000:], flush=True)
                return
            # The first command waits for the handler's partition assignment; not part of any figure.
            first = httpx.post(
                f"{url}/aggregates/{aggregate}/commands",
                timeout=60,
                json={"aggregate_id": "first", "type": "CreateInvoice", "payload": CREATE},
            )
            print(f"# first command: {first.status_code}", flush=True)
            kinds = {"httpx": HttpxConnections, "raw": RawConnections}
            for name in os.environ.get("FOLDLINE_BENCH_GATEWAY_CLIENTS", "httpx,raw").split(","):
                for rate in rates:
                    pids = {"gateway": gateway.pid, "handler": handler.pid}
                    asyncio.run(bench_rate(kinds[name], url, aggregate, rate, seconds, pids))
        finally:
            for proc in (gateway, handler):
                proc.terminate()
                proc.wait(60)
    print(f"# done — {load()}", flush=True)


if __name__ == "__main__":
    main()
