"""The least CPU a Python HTTP server on this machine spends per command request: the gateway's floor.

    python -m bench.http_floor                        (1,000/s for 10 s; FOLDLINE_BENCH_GATEWAY_RATES/_SECONDS)

A server of a few lines in a child process: uvloop, httptools' parser, one ``asyncio.Protocol`` per
connection; each POST's JSON body is parsed (orjson) and answered, after the time a command waits for its
result (``--hold-ms``, 20 by default), with a fixed 200 and a result-sized JSON body. No ASGI, no task
per request, no Kafka, no checks: what any Python gateway on this loop pays for the socket reads and
writes, the parsing and a timer. Driven by ``bench.gateway``'s raw asyncio client over the same
keep-alive connections; its CPU per request is printed the way ``bench.gateway`` prints the gateway's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

import orjson

from bench.support import REPO, figure, free_port, load, wait_until
from foldline.dev.kafka import port_open

RESULT = orjson.dumps(
    {
        "command_id": "0f6c3c8e4b2a4f5e9d1c7b3a2e4f6a8c",
        "aggregate_id": "r1000-abcdef-123",
        "status": "succeeded",
        "version": 1,
        "events": ["InvoiceCreated"],
        "error": None,
        "at": "2026-12-02T20:00:00.000000+00:00",
    }
)
ANSWER = (
    b"HTTP/1.1 200 OK\r\nlocation: /aggregates/inv/commands/0f6c3c8e4b2a4f5e9d1c7b3a2e4f6a8c\r\n"
    + f"content-length: {len(RESULT)}\r\ncontent-type: application/json\r\n\r\n".encode()
    + RESULT
)


class Floor(asyncio.Protocol):
    """One keep-alive connection: parse, read the body, answer after ``hold`` seconds."""

    def __init__(self, hold: float) -> None:
        import httptools  # uvicorn's parser; imported here so the measuring side needs no import of it

        self.hold = hold
        self.parser = httptools.HttpRequestParser(self)
        self.body = b""
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is not asyncio's class

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        orjson.loads(self.body)
        self.body = b""
        assert self.transport is not None
        asyncio.get_running_loop().call_later(self.hold, self._answer)

    def _answer(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(ANSWER)


def serve(port: int, hold: float) -> None:
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Floor(hold), "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


def floor_process(port: int, hold_ms: float) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "bench.http_floor", "--serve", str(port), "--hold-ms", str(hold_ms)]
    return subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(REPO)})


async def measure(rate: int, seconds: float, hold_ms: float = 20.0) -> float:
    """The floor server's CPU seconds per request at ``rate``/s (printed too)."""
    # bench.gateway imports this module to run the floor beside its loads: its helpers come in here.
    from bench.gateway import RawConnections, measured_load, quantile

    port = free_port()
    proc = floor_process(port, hold_ms)
    try:
        if not wait_until(lambda: port_open(port), 30):
            raise RuntimeError("the HTTP floor server did not start")
        url = f"http://127.0.0.1:{port}"
        latencies, statuses, elapsed, _, cpu = await measured_load(
            RawConnections, url, "floor", rate, seconds, {"floor": proc.pid}
        )
    finally:
        proc.terminate()
        proc.wait(30)
    used = cpu["floor"]
    sent = max(1, sum(statuses.values()))
    note = f"{statuses.get(200, 0):,} answered in {elapsed:.1f}s, each held {hold_ms:.0f} ms; {load()}"
    figure(f"HTTP floor server CPU per request at {rate:,}/s", used / sent * 1e6, "µs", note)
    figure(f"  request→answer p99 at {rate:,}/s (floor, {hold_ms:.0f} ms held)", quantile(latencies, 99) * 1000, "ms")
    return used / sent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve", type=int, help="run the floor server on this port (the child process)")
    ap.add_argument("--hold-ms", type=float, default=20.0)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.hold_ms / 1000)
        return
    seconds = float(os.environ.get("FOLDLINE_BENCH_GATEWAY_SECONDS", "10"))
    rates = [int(r) for r in os.environ.get("FOLDLINE_BENCH_GATEWAY_RATES", "1000").split(",")]
    print(f"# HTTP floor — {load()}", flush=True)
    started = time.perf_counter()
    for rate in rates:
        asyncio.run(measure(rate, seconds, args.hold_ms))
    print(f"# done in {time.perf_counter() - started:.0f} s — {load()}", flush=True)


if __name__ == "__main__":
    main()
