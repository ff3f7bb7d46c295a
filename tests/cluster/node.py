"""Start and stop the real one-node cluster (``scripts/cluster.sh``) and run kubectl and helm against it.

The binaries and images are built by ``make install`` (``scripts/cluster.sh build``), never here: a
missing part makes ``up`` fail with the script's message, and that fails the tests (no skip, no fake).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tests.scripts import ScriptTimeout, run_script, tail

__all__ = ["Cluster", "ClusterError", "start_cluster", "stop_cluster", "wait_for"]

# `up` from a warm cache takes seconds; leave room for a loaded machine, and still bound it.
UP_TIMEOUT_S = 10 * 60
DOWN_TIMEOUT_S = 3 * 60
COMMAND_TIMEOUT_S = 120.0
LOAD_TIMEOUT_S = 5 * 60  # a ~200 MB image archive imports in seconds; a loaded machine needs more
_LOG_TAIL_LINES = 60
T = TypeVar("T")


class ClusterError(RuntimeError):
    """The cluster script or a kubectl/helm command failed; the message carries its output."""


def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return tail(text, lines)


def _script(repo_root: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    script = repo_root / "scripts" / "cluster.sh"
    if not script.is_file():
        raise ClusterError(f"cluster script not found: {script}")
    try:
        return run_script(script, *args, cwd=repo_root, timeout=timeout)
    except ScriptTimeout as exc:
        raise ClusterError(
            f"`cluster.sh {' '.join(args)}` timed out after {timeout:.0f}s\n{_tail(exc.stderr)}"
        ) from None


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 120.0, interval: float = 0.5) -> T:
    """Poll until ``probe`` returns something truthy; fail naming ``what`` and the last value otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


@dataclass(frozen=True)
class Cluster:
    """The running node: its kubeconfig, its own address, and the kubectl/helm built for it."""

    repo_root: Path
    kubeconfig: Path
    env: dict[str, str]

    @property
    def node_ip(self) -> str:
        """The node's own address: pods reach services on the host (Kafka, PostgreSQL) here."""
        return self.env["FOLDLINE_CLUSTER_NODE_IP"]

    @property
    def bin_dir(self) -> Path:
        return Path(self.env["FOLDLINE_CLUSTER_BIN"])

    def _environ(self) -> dict[str, str]:
        return {**os.environ, **self.env, "PATH": f"{self.bin_dir}:{os.environ.get('PATH', '')}"}

    def run(
        self, tool: str, *args: str, input: str | None = None, check: bool = True, timeout: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl`` or ``helm`` with the cluster's kubeconfig; raise ClusterError on failure if ``check``."""
        cmd = [str(self.bin_dir / tool), *args]
        try:
            result = subprocess.run(
                cmd,
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self._environ(),
                stdin=None if input is not None else subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"`{shlex.join(cmd)}` timed out after {timeout:.0f}s") from exc
        if check and result.returncode != 0:
            output = f"{_tail(result.stderr)}\n{_tail(result.stdout)}"
            raise ClusterError(f"`{shlex.join(cmd)}` failed (exit {result.returncode}):\n{output}")
        return result

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, input=input, check=check, timeout=timeout)

    def helm(
        self, *args: str, check: bool = True, timeout: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        return self.run("helm", *args, check=check, timeout=timeout)

    def load_image(self, archive: Path, *names: str) -> list[str]:
        """Import a docker/OCI image archive into the node (``cluster.sh load``); return the image's names.

        ``names`` are extra names for it; a bare ``name:tag`` becomes ``docker.io/library/name:tag``, which is
        what a pod's ``image: name:tag`` (with ``imagePullPolicy: Never``) asks the node for.
        """
        result = _script(self.repo_root, "load", str(archive), *names, timeout=LOAD_TIMEOUT_S)
        if result.returncode != 0:
            raise ClusterError(
                f"`scripts/cluster.sh load {archive}` failed (exit {result.returncode}):\n" + _tail(result.stderr)
            )
        return result.stdout.split()

    def apply(self, *objects: dict[str, Any], namespace: str | None = None) -> None:
        """``kubectl apply`` the given objects (a List, so one call)."""
        args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        self.kubectl(*args, input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object as a dict, or None when it does not exist."""
        args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
        result = self.kubectl(*args, check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr or "not found" in result.stderr:
                return None
            raise ClusterError(f"kubectl get {kind} {name} failed: {_tail(result.stderr)}")
        return dict(json.loads(result.stdout))

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        out = self.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
        return list(json.loads(out)["items"])

    def exec(
        self, namespace: str, pod: str, *command: str, check: bool = True, timeout: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl exec`` (through the API server and the kubelet, as a user would)."""
        return self.kubectl("exec", "-n", namespace, pod, "--", *command, check=check, timeout=timeout)

    def wait_available(self, namespace: str, deployment: str, timeout: float = 180.0) -> dict[str, Any]:
        """Wait until every replica of a Deployment is updated and available; fail with its pods' state."""

        def available() -> dict[str, Any] | None:
            dep = self.get("deployment", deployment, namespace)
            if not dep:
                return None
            want = dep["spec"].get("replicas", 1)
            status = dep.get("status") or {}
            done = status.get("updatedReplicas") == want and status.get("availableReplicas") == want
            return dep if done and status.get("observedGeneration", 0) >= dep["metadata"]["generation"] else None

        try:
            return wait_for(f"deployment {namespace}/{deployment} available", available, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.describe_pods(namespace)}") from None

    def wait_pod_ready(self, namespace: str, pod: str, timeout: float = 180.0) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            obj = self.get("pod", pod, namespace)
            conditions = ((obj or {}).get("status") or {}).get("conditions") or []
            return obj if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) else None

        try:
            return wait_for(f"pod {namespace}/{pod} Ready", ready, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.describe_pods(namespace)}") from None

    def describe_pods(self, namespace: str) -> str:
        """Pods and recent events of a namespace: what a timeout message needs to be useful."""
        pods = self.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False)
        events = self.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False)
        return f"pods:\n{pods.stdout}{pods.stderr}\nevents:\n{_tail(events.stdout, 30)}{events.stderr}"

    @contextmanager
    def port_forward(self, namespace: str, target: str, remote_port: int, timeout: float = 60.0) -> Iterator[int]:
        """``kubectl port-forward`` to ``target`` (e.g. ``pod/x``); yields the local port on 127.0.0.1."""
        cmd = [
            str(self.bin_dir / "kubectl"),
            "port-forward",
            "-n",
            namespace,
            "--address",
            "127.0.0.1",
            target,
            f":{remote_port}",
        ]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self._environ(),
            start_new_session=True,
        )
        try:
            port = _forwarded_port(proc, timeout)
            yield port
        finally:
            proc.terminate()
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def _forwarded_port(proc: subprocess.Popen[str], timeout: float) -> int:
    """Read kubectl's ``Forwarding from 127.0.0.1:N -> M`` line (bounded by ``timeout``)."""
    import selectors

    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+) ->", line)
            if match:
                return int(match.group(1))
    proc.kill()
    _, err = proc.communicate()
    raise ClusterError(f"kubectl port-forward did not start within {timeout:.0f}s: {''.join(seen)}{_tail(err)}")


def _parse_env(text: str) -> dict[str, str]:
    """``export A=1 B=2`` lines as printed by ``cluster.sh env``."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if not words or words[0] != "export":
            continue
        for word in words[1:]:
            key, _, value = word.partition("=")
            env[key] = value
    return env


def start_cluster(repo_root: Path, extra: Sequence[str] = ()) -> Cluster:
    """(Re)start the node from empty state; fail with the script's own report when a part is missing or broken."""
    result = _script(repo_root, "up", *extra, timeout=UP_TIMEOUT_S)
    if result.returncode != 0:
        # The script prints the tails of the component logs, its error message last.
        raise ClusterError(f"`scripts/cluster.sh up` failed (exit {result.returncode}):\n{_tail(result.stderr, 150)}")
    lines = result.stdout.strip().splitlines()
    kubeconfig = Path(lines[-1]) if lines else None
    if kubeconfig is None or not kubeconfig.is_file():
        raise ClusterError(f"the cluster started but reported no kubeconfig (stdout: {result.stdout!r})")
    env_result = _script(repo_root, "env", timeout=30)
    if env_result.returncode != 0:
        raise ClusterError(f"`scripts/cluster.sh env` failed: {env_result.stderr}")
    env = _parse_env(env_result.stdout)
    env.pop("PATH", None)
    return Cluster(repo_root=repo_root, kubeconfig=kubeconfig, env=env)


def stop_cluster(repo_root: Path) -> None:
    """Stop the node and undo its changes to the host (a no-op when it is not running)."""
    result = _script(repo_root, "down", timeout=DOWN_TIMEOUT_S)
    if result.returncode != 0:
        raise ClusterError(f"`scripts/cluster.sh down` failed (exit {result.returncode}):\n{_tail(result.stderr)}")
