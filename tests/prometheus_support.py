"""A real Prometheus for tests: Debian's ``prometheus`` on loopback, its own port and data directory, 1 s
scrapes of targets a test adds (file service discovery), foldline's alert rules loaded; and the PromQL of
the chart's dashboards and of the rules file, read from those files."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from foldline.gateway.server import free_port
from tests.conftest import REPO

CHART = REPO / "charts" / "foldline"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
NAMESPACE = "observe-test"
#: How far back a steady instant lies: past every scrape still running (1 s interval, 900 ms timeout).
SETTLED_S = 3.0


class Prometheus:
    """A real ``prometheus`` on loopback scraping the targets written to a file_sd file."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: apt-get install prometheus (scripts/bootstrap.sh does)"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets_file = workdir / "targets.json"
        self.targets: dict[str, str] = {}
        self._write_targets()
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {
                    "job_name": "foldline",
                    "file_sd_configs": [{"files": [str(self.targets_file)], "refresh_interval": "1s"}],
                }
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.http = httpx.Client(base_url=self.url, timeout=10)
        wait_until(self._ready, 60, "prometheus to be ready")

    def _ready(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            return self.http.get("/-/ready").status_code == 200
        except httpx.TransportError:
            return False

    def _write_targets(self) -> None:
        groups = [
            {"targets": [address], "labels": {"namespace": NAMESPACE, "pod": pod}}
            for pod, address in sorted(self.targets.items())
        ]
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.targets_file)  # atomic: Prometheus never reads half a file

    def scrape(self, pod: str, port: int) -> None:
        self.targets[pod] = f"127.0.0.1:{port}"
        self._write_targets()
        wait_until(lambda: self.query(f'up{{pod="{pod}"}} == 1'), 60, f"prometheus to scrape {pod}")

    def forget(self, pod: str) -> None:
        self.targets.pop(pod)
        self._write_targets()
        wait_until(lambda: not self.query(f'up{{pod="{pod}"}}'), 60, f"prometheus to drop {pod}")

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Evaluate ``expr`` now, or at the Unix time ``at`` (see :meth:`steady_instant`)."""
        params: dict[str, str | float] = {"query": expr}
        if at is not None:
            params["time"] = at
        body = self.http.get("/api/v1/query", params=params).json()
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str, at: float | None = None) -> float:
        found = self.scalar(expr, at)
        assert found is not None, f"{expr}: no value"
        return found

    def scalar(self, expr: str, at: float | None = None) -> float | None:
        """The one value of ``expr``, or None if it has none (as when a target's last scrape failed)."""
        result = self.query(expr, at)
        assert len(result) <= 1, f"{expr}: {result}"
        return float(result[0]["value"][1]) if result else None

    def steady_instant(self, pods: set[str], timeout: float = 60) -> float:
        """An instant, no earlier than this call, at which the last scrape of every one of ``pods`` had
        succeeded.

        One scrape that misses its timeout on a loaded machine marks every series of that target stale,
        and a query "now" then finds none of them. Evaluated at this instant, which lies further back than
        any scrape still in flight, every check sees the same complete data however often it asks; and
        since it is not before the call, it sees what the caller has already waited for.
        """
        not_before = time.time()
        deadline = time.monotonic() + timeout
        up: dict[str, float] = {}
        while True:
            at = time.time() - SETTLED_S
            if at >= not_before:
                up = {s["metric"]["pod"]: float(s["value"][1]) for s in self.query("up", at)}
                if all(up.get(pod) == 1 for pod in pods):
                    return at
            assert time.monotonic() < deadline, f"no instant with every one of {sorted(pods)} up: {up}"
            time.sleep(0.5)

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(30)


def wait_until(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) of every target of every dashboard in the chart."""
    out = []
    for path in sorted((CHART / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            out += [(path.name, panel["title"], target["expr"]) for target in panel["targets"]]
    return out


def variable_queries() -> list[tuple[str, str, str]]:
    """(dashboard, selector, label) of every ``label_values(selector, label)`` variable."""
    out = []
    for path in sorted((CHART / "dashboards").glob("*.json")):
        for var in json.loads(path.read_text())["templating"]["list"]:
            if var["type"] == "query":
                match = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"])
                assert match, var["query"]
                out.append((path.name, match.group(1), match.group(2)))
    return out


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def fill(expr: str, aggregate: str) -> str:
    return expr.replace("$namespace", NAMESPACE).replace("$pod", ".*").replace("$aggregate", aggregate)
