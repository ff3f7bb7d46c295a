"""Several handler engines in one pod: a parent process that supervises ``FOLDLINE_WORKERS`` workers.

One Python process uses one core (the GIL), so a pod with two cores runs two workers. Each worker is a
whole command handler (``foldline command-handler`` started again with ``FOLDLINE_WORKER_INDEX``): its
own group member in the handlers' consumer group (the group spreads the partitions over every worker of
every pod), its own transactional producer and its own stores. Nothing is shared between workers but the
pod, so exactly-once holds per worker exactly as it does per process.

Identities are stable per (pod, index), so a restarted pod fences its predecessors' producers: worker 0
keeps the pod's instance id (a pod going from 1 to N workers keeps its identity), worker ``i`` uses
``<instance id>-w<i>``. The stores are the pod's, not a worker's: every worker opens a partition's store
in the same ``<state dir>/<agg>/partition-<n>``, one at a time (``foldline.store.lock``), so a partition
that lands on another worker after a restart or a rebalance restores only the tail. The ``worker-<i>``
directories of earlier versions are removed when the pod starts.

The parent serves the pod's ``/healthz``, ``/readyz`` and ``/metrics`` (every worker's, merged) and
restarts a worker that exits or hangs; a worker that keeps failing (a crash loop) makes the pod not ready.
SIGTERM stops every worker the usual way (each finishes or aborts its transaction and leaves the group).
Workers die with the parent (``PR_SET_PDEATHSIG``): a killed pod leaves no orphan still writing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from foldline.errors import ConfigurationError
from foldline.observability.merge import Families, merge
from foldline.service import serve
from foldline.settings import HandlerSettings

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

# ctypes, urllib and the thread pool are imported where used: a single-process handler (the cli imports
# this module for ``worker_index``) starts without them.
log = structlog.get_logger("foldline.handler")

#: The variables a worker is started with (and reads back in ``worker_settings``).
INDEX_VAR = "FOLDLINE_WORKER_INDEX"
PARENT_VAR = "FOLDLINE_WORKER_PARENT"
#: A worker that exited this many times within CRASH_WINDOW_S is crash-looping: the pod is not ready.
CRASH_EXITS = 3
CRASH_WINDOW_S = 300.0
#: A crash-looping worker that has now run this long is healthy again.
RECOVERED_AFTER_S = 60.0
#: Seconds SIGTERM gives the workers to drain before they are killed.
DRAIN_S = 60.0
_CHECK_EVERY_S = 0.5
_HEALTH_EVERY_S = 5.0
_PR_SET_PDEATHSIG = 1


def worker_index(env: dict[str, str] | os._Environ[str] | None = None) -> int | None:
    """This process's worker index, when a supervisor started it."""
    raw = (os.environ if env is None else env).get(INDEX_VAR, "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise ConfigurationError(f"{INDEX_VAR} must be a worker index (0, 1, ...), got {raw!r}")
    return int(raw)


def worker_settings(settings: HandlerSettings, index: int) -> HandlerSettings:
    """A worker's identity and share: instance id (stable per index; the state directory is the pod's), a
    share of the aggregate cache (the pod's memory stays what one process took)."""
    changes: dict[str, object] = {"cache_size": max(1, settings.cache_size // max(1, settings.workers))}
    if index > 0:
        changes["instance_id"] = f"{settings.instance_id}-w{index}"
    return settings.with_changes(**changes)


def pod_members(settings: HandlerSettings, index: int | None = None) -> frozenset[str]:
    """The instance ids of every worker of this process's pod (``settings`` are the worker's own)."""
    index = worker_index() if index is None else index
    base = settings.instance_id.removesuffix(f"-w{index}") if index else settings.instance_id
    return frozenset([base, *(f"{base}-w{i}" for i in range(1, max(1, settings.workers)))])


def remove_worker_directories(state_dir: Path) -> None:
    """Earlier versions kept worker ``i``'s stores in ``<state dir>/worker-<i>``; nothing reads them now."""
    if not state_dir.is_dir():
        return
    for path in state_dir.iterdir():
        if path.is_dir() and path.name.startswith("worker-") and path.name[len("worker-") :].isdigit():
            log.info("removing an old worker state directory", path=str(path))
            shutil.rmtree(path, ignore_errors=True)


def become_worker(index: int) -> None:
    """Die with the supervisor (Linux), and log with the worker's index."""
    structlog.contextvars.bind_contextvars(worker=index)
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    parent = os.environ.get(PARENT_VAR, "")
    if parent and os.getppid() != int(parent):  # the supervisor died before prctl took effect
        os._exit(1)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    started: float = 0.0
    exits: deque[float] = field(default_factory=deque)
    next_start: float = 0.0
    #: The last metrics read from it: what it had counted when it exits.
    last_metrics: Families | None = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def crash_looping(self, now: float) -> bool:
        # Read from the HTTP threads too: a copy (atomic), never mutated here; _exited forgets old exits.
        recent = sum(1 for t in list(self.exits) if now - t <= CRASH_WINDOW_S)
        recovered = self.running() and now - self.started > RECOVERED_AFTER_S
        return recent >= CRASH_EXITS and not recovered

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as error:
            return error.code, b""
        except OSError:
            return 0, b""


class Supervisor:
    """Starts, watches and stops the workers; answers the pod's health and metrics."""

    def __init__(self, argv: list[str], settings: HandlerSettings, env: dict[str, str] | None = None) -> None:
        self._argv = argv
        self._settings = settings
        self._env = dict(os.environ if env is None else env)
        self.workers = [Worker(i) for i in range(settings.workers)]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._retired = Families()
        self._started = False
        from concurrent.futures import ThreadPoolExecutor

        self._pool: ThreadPoolExecutor = ThreadPoolExecutor(max(2, settings.workers), "foldline-scrape")

    # -- the supervising loop (the main thread: PR_SET_PDEATHSIG follows the thread that started a child)
    def run(self) -> None:
        log.info("starting workers", workers=len(self.workers))
        remove_worker_directories(Path(self._settings.state_dir))
        next_health = time.monotonic() + _HEALTH_EVERY_S
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                for worker in self.workers:
                    if worker.proc is not None and worker.proc.poll() is not None:
                        self._exited(worker, now)
                    if worker.proc is None and now >= worker.next_start:
                        self._start(worker)
                self._started = True
                if now >= next_health:
                    next_health = now + _HEALTH_EVERY_S
                    self._kill_hung()
                self._stop.wait(_CHECK_EVERY_S)
        finally:
            self._drain()
            self._pool.shutdown(wait=False)

    def stop(self) -> None:
        self._stop.set()

    def _start(self, worker: Worker) -> None:
        worker.port = _free_port()  # a port taken meanwhile only makes this start fail, and retry
        env = {
            **self._env,
            INDEX_VAR: str(worker.index),
            PARENT_VAR: str(os.getpid()),
            "FOLDLINE_WORKERS": str(len(self.workers)),
            "FOLDLINE_HTTP_PORT": str(worker.port),
            "FOLDLINE_HTTP_HOST": "127.0.0.1",
        }
        worker.proc = subprocess.Popen(self._argv, env=env)
        worker.started = time.monotonic()
        log.info("worker started", worker=worker.index, pid=worker.proc.pid)

    def _exited(self, worker: Worker, now: float) -> None:
        assert worker.proc is not None
        code = worker.proc.returncode
        worker.exits.append(now)
        with self._lock:
            worker.proc = None
            if worker.last_metrics is not None:
                self._retired.add(worker.last_metrics, cumulative_only=True)
            worker.last_metrics = None
        while now - worker.exits[0] > CRASH_WINDOW_S:
            worker.exits.popleft()
        looping = worker.crash_looping(now)
        recent = len(worker.exits)
        worker.next_start = now + min(30.0, 0.5 * 2 ** (recent - 1))
        log.error("worker exited; restarting it", worker=worker.index, exit_code=code, exits_recently=recent,
                  crash_loop=looping)  # fmt: skip

    def _kill_hung(self) -> None:
        """A worker whose own liveness fails is stuck in a client call: kill it; the loop restarts it."""
        for worker in self.workers:
            if worker.running() and time.monotonic() - worker.started > 30.0:
                status, _ = worker.get("/healthz")
                if status == 503 and worker.proc is not None:
                    log.error("worker hung; killing it", worker=worker.index)
                    worker.proc.kill()

    def _drain(self) -> None:
        running = [w for w in self.workers if w.running()]
        for worker in running:
            assert worker.proc is not None
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + DRAIN_S
        for worker in running:
            assert worker.proc is not None
            try:
                worker.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker did not stop in time; killing it", worker=worker.index)
                worker.proc.kill()
                worker.proc.wait()
        log.info("workers stopped")

    # -- health and metrics (HTTP threads) ---------------------------------------------------------------
    def live(self) -> bool:
        return True  # the parent's loop only sleeps; a hung worker is restarted by it (_kill_hung)

    def ready(self) -> bool:
        now = time.monotonic()
        workers = list(self.workers)
        if not self._started or any(w.crash_looping(now) or not w.running() for w in workers):
            return False
        return all(status == 200 for status, _ in self._pool.map(lambda w: w.get("/readyz"), workers))

    def metrics(self) -> bytes:
        scraped = [(w, w.proc) for w in self.workers if w.proc is not None]
        texts = list(self._pool.map(lambda item: item[0].get("/metrics"), scraped))
        with self._lock:
            for (worker, proc), (status, body) in zip(scraped, texts, strict=True):
                # Only for the process still registered: one that exited meanwhile has been retired.
                if status == 200 and worker.proc is proc:
                    worker.last_metrics = Families.parse(body.decode())
            parts = [self._retired, *(w.last_metrics for w in self.workers if w.last_metrics is not None)]
            return merge(parts).render()


def serve_workers(argv: list[str], settings: HandlerSettings) -> int:
    """Run the workers until SIGTERM or SIGINT, serving the pod's /healthz, /readyz and /metrics."""
    supervisor = Supervisor(argv, settings)
    return serve(supervisor, settings.http_port, metrics=supervisor.metrics)
