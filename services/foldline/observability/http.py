"""``/healthz``, ``/readyz`` and ``/metrics`` on one port, served from a daemon thread.

Liveness only says the loop still turns; readiness says the stores are restored and the process can
take traffic, so a pod restoring a large store is not sent work (or counted as available) too early.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


class HealthServer:
    def __init__(
        self,
        port: int,
        *,
        live: Callable[[], bool],
        ready: Callable[[], bool],
        host: str | None = None,
        extra: Mapping[str, Callable[[], bool]] | None = None,
        metrics: Callable[[], bytes] = generate_latest,
    ) -> None:
        """``metrics`` renders /metrics: this process's registry, or several processes' (handler workers)."""
        # Pods listen on every interface; FOLDLINE_HTTP_HOST=127.0.0.1 keeps a local process on loopback.
        host = host or os.environ.get("FOLDLINE_HTTP_HOST") or "0.0.0.0"
        checks = {**(extra or {}), "/healthz": live, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, metrics(), CONTENT_TYPE_LATEST)
                elif path in checks:
                    ok = checks[path]()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"not ready\n", "text/plain")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: stay quiet
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="foldline-health", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
