"""Gateway benchmark: commands/s and end-to-end latency (HTTP POST → result in the answer) at fixed loads.

Open loop: sends are scheduled at fixed intervals (asyncio + httpx) whatever the answers do, and each
latency is measured from the send's scheduled time, so a slow answer cannot hide later queueing
(no coordinated omission). Everything runs on loopback: the real broker, a command handler and the
gateway as child processes (``foldline command-handler`` / ``foldline gateway``), this process as the
client. Prints one line per figure; never fails on a time.

    python -m bench.gateway
    FOLDLINE_BENCH_GATEWAY_SECONDS=10 FOLDLINE_BENCH_GATEWAY_RATES=500,1000,2000
    FOLDLINE_BENCH_GATEWAY_CLIENTS=httpx,raw   (the load generator: httpx, and bare asyncio streams)
    FOLDLINE_BENCH_GATEWAY_BASELINE=/work/main/services   (a second gateway from that code, same handler:
        each load runs against the baseline (A) and this tree (B) in turns, A B A B, for a fair comparison)
    FOLDLINE_BENCH_GATEWAY_ROUNDS=2            (A B rounds per load with a baseline)
    FOLDLINE_BENCH_GATEWAY_PROFILE=/tmp/gw.prof   (this tree's gateway runs under cProfile, its loop thread)
    FOLDLINE_BENCH_GATEWAY_FLOOR=0             (skip the HTTP floor: ``bench.http_floor`` before each raw load)

Beside the end-to-end latency it prints the gateway's own share: from the moment a read_committed reader
in this process sees the command's result (the handler's part is done) to the HTTP answer.
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
import orjson
from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from bench import http_floor
from bench.support import REPO, broker, figure, free_port, load, new_aggregate, wait_until
from foldline.topics import TopicNames

CREATE = {"customer": "ACME Corporation", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}


def child(
    args: list[str], log: Path, code: str | None = None, profile: str | None = None, **env: str
) -> subprocess.Popen[bytes]:
    """``foldline <args>`` in a child; ``code``: another checkout's services/ first on the path (a baseline);
    ``profile``: under cProfile, its stats written there when the child stops."""
    environ = {
        **os.environ,
        "FOLDLINE_LOG_FORMAT": "json",
        "FOLDLINE_LOG_LEVEL": "warning",
        "PYTHONPATH": os.pathsep.join([*([code] if code else []), str(REPO), os.environ.get("PYTHONPATH", "")]),
        **env,
    }
    prefix = ["-m", "cProfile", "-o", profile] if profile else []
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, *prefix, "-m", "foldline.cli", *args], env=environ, stdout=out, stderr=subprocess.STDOUT
        )


class ResultsWatch:
    """A read_committed reader of the results topic in a process of its own (this one is busy sending):
    when each result became visible, by aggregate id (each bench command has its own), so the gateway's
    own part of the latency shows. ``time.perf_counter`` is CLOCK_MONOTONIC: the same clock in both."""

    def __init__(self, bootstrap: str, topic: str, out: Path) -> None:
        self.out = out
        self.seen: dict[str, float] = {}
        self._read = 0
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.gateway", "--watch", bootstrap, topic, str(out)],
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])},
        )
        wait_until(out.exists, 30)

    def update(self) -> dict[str, float]:
        with self.out.open("rb") as f:
            f.seek(self._read)
            data = f.read()
        complete = data.rpartition(b"\n")[0]
        self._read += len(complete) + (1 if complete else 0)
        for line in complete.splitlines():
            key, _, at = line.decode().partition("\t")
            self.seen.setdefault(key, float(at))
        return self.seen

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)


def watch_results(bootstrap: str, topic: str, out: str) -> None:
    """The ``ResultsWatch`` process: one line per result, ``aggregate id <TAB> perf_counter``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-watch-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 5,
        }
    )
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in parts])
    with open(out, "a", buffering=1 << 16) as f:
        while True:
            # consume(n, t) waits for n records or t: wait for one, then take whatever else is there.
            messages = consumer.consume(1, 0.05)
            at = time.perf_counter()
            if messages:
                messages += consumer.consume(1000, 0)
            for msg in messages:
                value = msg.value()
                if msg.error() is None and value is not None:
                    f.write(f"{orjson.loads(value)['aggregate_id']}\t{at}\n")
            if messages:
                f.flush()


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

    answered: dict[str, float] = {}

    async def one(i: int, due: float) -> None:
        aggregate_id = f"{tag}-{i}"
        body = json.dumps({"aggregate_id": aggregate_id, "type": "CreateInvoice", "payload": CREATE}).encode()
        try:
            status = await connections.post(path, body)
        except (httpx.HTTPError, OSError, asyncio.IncompleteReadError) as exc:
            statuses[type(exc).__name__] += 1
            return
        answered[aggregate_id] = now = time.perf_counter()
        latencies.append(now - due)
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
    return latencies, statuses, time.perf_counter() - start, answered


def quantile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def cpu_seconds(pid: int) -> float:
    """A process's own CPU time (utime + stime, all its threads) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pool_size(rate: int) -> int:
    """Keep-alive connections for a load of ``rate``/s: enough for the answers in flight."""
    return max(32, min(256, rate // 4))


async def measured_load(kind, url: str, aggregate: str, rate: int, seconds: float, pids: dict[str, int]):
    """Open ``kind`` connections (before the clock), warm up for up to 2 s, then offer ``rate``/s for
    ``seconds``: latencies, statuses, elapsed and answered as ``offered_load`` gives them, and the CPU
    seconds each process in ``pids`` used over the measured load."""
    tag = uuid.uuid4().hex[:6]
    connections = kind(url, size=pool_size(rate))
    await connections.open()  # connect before the clock starts
    try:
        await offered_load(connections, aggregate, rate, min(2.0, seconds), f"warm-{tag}")
        await asyncio.sleep(1.0)  # let the warm-up drain
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        latencies, statuses, elapsed, answered = await offered_load(
            connections, aggregate, rate, seconds, f"r{rate}-{tag}"
        )
        cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    finally:
        await connections.close()
    return latencies, statuses, elapsed, answered, cpu


async def bench_rate(
    kind,
    url: str,
    aggregate: str,
    rate: int,
    seconds: float,
    pids: dict[str, int],
    watch: ResultsWatch,
    label: str = "",
) -> None:
    latencies, statuses, elapsed, answered, cpu = await measured_load(kind, url, aggregate, rate, seconds, pids)
    # The gateway's own part: from the result visible to a read_committed reader to the HTTP answer.
    await asyncio.sleep(0.5)  # the watcher's last lines
    seen = watch.update()
    own = [at - seen[k] for k, at in answered.items() if k in seen]
    ok = statuses.get(200, 0)
    others = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=str) if k != 200) or "none"
    kind_name = f"{kind.name}{label}"
    figure(
        f"gateway commands/s at {rate:,}/s offered ({kind_name})",
        ok / elapsed,
        "commands/s",
        f"{ok:,} accepted in {elapsed:.1f}s over {pool_size(rate)} connections; other answers: {others}",
    )
    figure(f"  POST→result p50 at {rate:,}/s ({kind_name})", quantile(latencies, 50) * 1000, "ms")
    figure(f"  POST→result p99 at {rate:,}/s ({kind_name})", quantile(latencies, 99) * 1000, "ms")
    figure(f"  POST→result max at {rate:,}/s ({kind_name})", max(latencies, default=float("nan")) * 1000, "ms", load())
    note = f"{len(own):,} of {len(answered):,} results seen by the watcher"
    figure(f"  result visible→answer p50 at {rate:,}/s ({kind_name})", quantile(own, 50) * 1000, "ms", note)
    figure(f"  result visible→answer p99 at {rate:,}/s ({kind_name})", quantile(own, 99) * 1000, "ms")
    sent = max(1, sum(statuses.values()))
    for name, seconds_used in cpu.items():  # each process alone: its own CPU seconds per command sent
        figure(f"  {name} CPU per command at {rate:,}/s ({kind_name})", seconds_used / sent * 1e6, "µs", load())


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
        handler_port = free_port()
        handler = child(
            ["command-handler", "--aggregate", path],
            tmp / "handler.log",
            FOLDLINE_KAFKA_BOOTSTRAP=bootstrap,
            FOLDLINE_STATE_DIR=str(tmp / "state"),
            FOLDLINE_HTTP_PORT=str(handler_port),
            FOLDLINE_COMMIT_INTERVAL_MS=commit_ms,
        )
        baseline = os.environ.get("FOLDLINE_BENCH_GATEWAY_BASELINE")
        profile = os.environ.get("FOLDLINE_BENCH_GATEWAY_PROFILE")
        # (label, process, url): this tree's gateway, and the baseline's first when one is given (A B A B).
        gateways = []
        for label, code in ([(" A: baseline", baseline)] if baseline else []) + [(" B" if baseline else "", None)]:
            port = free_port()
            proc = child(
                ["gateway", "--aggregate", path, "--port", str(port), "--host", "127.0.0.1"],
                tmp / f"gateway{label.strip()[:1]}.log",
                code=code,
                profile=None if code else profile,
                FOLDLINE_KAFKA_BOOTSTRAP=bootstrap,
            )
            gateways.append((label, proc, f"http://127.0.0.1:{port}"))
        url = gateways[-1][2]
        watch = ResultsWatch(bootstrap, TopicNames(aggregate).results, tmp / "seen.tsv")
        try:
            up = [f"http://127.0.0.1:{handler_port}/readyz", *(f"{u}/readyz" for _, _, u in gateways)]
            if not wait_until(lambda: all(ready(u) for u in up), 120):
                print("# the handler or gateway did not become ready; logs:", flush=True)
                for log in sorted(tmp.glob("*.log")):
                    print(log.read_text()[-2000:], flush=True)
                return
            # The first command waits for the handler's partition assignment; not part of any figure.
            first = httpx.post(
                f"{url}/aggregates/{aggregate}/commands",
                timeout=60,
                json={"aggregate_id": "first", "type": "CreateInvoice", "payload": CREATE},
            )
            print(f"# first command: {first.status_code}", flush=True)
            kinds = {"httpx": HttpxConnections, "raw": RawConnections}
            rounds = int(os.environ.get("FOLDLINE_BENCH_GATEWAY_ROUNDS", "2")) if baseline else 1
            floor = os.environ.get("FOLDLINE_BENCH_GATEWAY_FLOOR", "1") != "0"
            for name in os.environ.get("FOLDLINE_BENCH_GATEWAY_CLIENTS", "httpx,raw").split(","):
                for rate in rates:
                    if name == "raw" and floor:  # the least any Python server on this loop pays per request
                        asyncio.run(http_floor.measure(rate, seconds))
                    for _ in range(rounds):
                        for label, proc, gw_url in gateways:
                            pids = {"gateway": proc.pid, "handler": handler.pid}
                            asyncio.run(bench_rate(kinds[name], gw_url, aggregate, rate, seconds, pids, watch, label))
        finally:
            watch.stop()
            for proc in (*(p for _, p, _ in gateways), handler):
                proc.terminate()
                proc.wait(60)
    print(f"# done — {load()}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--watch"]:
        watch_results(*sys.argv[2:5])
    else:
        main()
