"""What the e2e tests share: waiting, the operator as a real process, and playing the kubelet's part.

There is no kubelet and no scheduler in the test control plane (etcd, kube-apiserver and
kube-controller-manager only), so Deployments get ReplicaSets and Pods that never run, and StatefulSets
get Pods and PersistentVolumeClaims that stay Pending (no provisioner). The tests do
what a kubelet would: they run a pod's container command with its environment as a local process
(resolving ``fieldRef`` and ``secretKeyRef`` from the API server, expanding ``$(VAR)``) and, once its
``/readyz`` answers, mark the Pod Ready, so the real controllers make the Deployment available.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from foldline_operator.kube import Kube

REPO = Path(__file__).resolve().parents[2]
API = "foldline.io/v1alpha1"
ESA = "EventSourcedAggregate"
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.25) -> T:
    """Poll until ``probe`` returns something truthy; fail with ``what`` and the last value otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or ():
        if c.get("type") == type_:
            return dict(c)
    return {}


# -- the operator as a real process ---------------------------------------------------------------------
@dataclass
class OperatorProcess:
    """``python -m foldline_operator``; each start takes a higher peering priority than the last."""

    kubeconfig: Path
    log_dir: Path
    peering: str
    resync_seconds: float = 2.0
    priority: int = 100
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    starts: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)

    def start(self, priority: int | None = None, *, standby: bool = False) -> OperatorProcess:
        """Start it and wait for its ``/readyz`` (for a ``standby``, paused by peering: its ``/healthz``)."""
        self.priority = priority if priority is not None else self.priority + 10
        self.port = free_port()
        self.starts += 1
        # A short peering lifetime: a SIGKILLed replica's record (it cannot say goodbye) blocks lower
        # priorities only this long.
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "FOLDLINE_OPERATOR_RESYNC_SECONDS": str(self.resync_seconds),
            "FOLDLINE_OPERATOR_PEERING_LIFETIME": "10",
            "FOLDLINE_LOG_FORMAT": "json",
            "PYTHONPATH": str(REPO),
            # The tests' SQLite views (under pytest's tmp dirs) share this machine's disk with the operator;
            # in a cluster they never would, and the operator reads no SQLite (docs/operator.md).
            "FOLDLINE_OPERATOR_SQLITE_DIR": tempfile.gettempdir(),
            **self.extra_env,
        }
        with (self.log_dir / f"operator-{self.starts}.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "foldline_operator",
                    "--peering",
                    self.peering,
                    "--priority",
                    str(self.priority),
                    "--http-port",
                    str(self.port),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        probe = "/healthz" if standby else "/readyz"
        wait_for(f"the operator's {probe}", lambda: self.alive_or_fail() and http_ok(self.port, probe), 60)
        return self

    def alive_or_fail(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the operator exited with {self.proc.returncode}:\n{self.log_tail()}")
        return True

    def kill(self) -> None:
        """SIGKILL: no cleanup, no peering farewell, handlers cut off wherever they are."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_tail(self, lines: int = 60) -> str:
        text = (self.log_dir / f"operator-{self.starts}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
            return str(response.read().decode())


def http_ok(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return int(response.status) == 200
    except OSError:
        return False


# -- playing the kubelet --------------------------------------------------------------------------------
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in commands and env values (unknown references stay as they are)."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def resolve_env(kube: Kube, namespace: str, pod_name: str, container: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in container.get("env") or ():
        name = entry["name"]
        if "value" in entry:
            env[name] = expand(entry["value"], env)
            continue
        source = entry["valueFrom"]
        if "fieldRef" in source:
            fields = {"metadata.name": pod_name, "metadata.namespace": namespace}
            env[name] = fields[source["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            data = kube.secret(namespace, ref["name"])
            assert data is not None and ref["key"] in data, f"Secret {ref} missing"
            env[name] = data[ref["key"]]
        else:
            raise AssertionError(f"unsupported env source {source}")
    return env


@dataclass
class LocalPod:
    """A pod's container, run here: ``proc`` and the HTTP port its probes answer on."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    argv: list[str]
    env: dict[str, str]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def run_pod_locally(kube: Kube, pod: dict[str, Any], root: Path) -> LocalPod:
    """Run the pod's (first) container as a local process: same command, same environment.

    Adapted, as the container would differ from this machine: paths under the container's volume
    mounts move under ``root``, the HTTP port is a free one (pods have their own network namespace;
    these processes share one), ``foldline`` is this interpreter's console script and the image's code
    (the test aggregates and views) is this repository, on PYTHONPATH.
    """
    meta, container = pod["metadata"], pod["spec"]["containers"][0]
    env = resolve_env(kube, meta["namespace"], meta["name"], container)
    mounts = sorted((m["mountPath"] for m in container.get("volumeMounts") or ()), key=len, reverse=True)
    for key, value in env.items():
        for mount in mounts:
            if value == mount or value.startswith(mount.rstrip("/") + "/"):
                env[key] = str(root / meta["name"] / value.lstrip("/"))
                Path(env[key]).parent.mkdir(parents=True, exist_ok=True)
                break
    _write_secret_volumes(kube, pod, root / meta["name"])
    port = free_port()
    for key in ("FOLDLINE_HTTP_PORT", "FOLDLINE_GATEWAY_PORT"):
        if key in env:
            env[key] = str(port)
    argv = [expand(arg, env) for arg in [*container["command"], *(container.get("args") or ())]]
    bin_dir = str(Path(sys.executable).parent)
    base = {
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(REPO),
    }
    log = root / f"{meta['name']}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env={**base, **env}, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    return LocalPod(meta["name"], proc, port, argv, env, log)


def _write_secret_volumes(kube: Kube, pod: dict[str, Any], root: Path) -> None:
    """What the kubelet does for a ``secret`` volume: its items as files under the container's mount."""
    meta, container = pod["metadata"], pod["spec"]["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts") or ()}
    for volume in pod["spec"].get("volumes") or ():
        source = volume.get("secret")
        if source is None or volume["name"] not in mounts:
            continue
        data = kube.secret(meta["namespace"], source["secretName"])
        assert data is not None, f"Secret {source['secretName']} missing"
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            target = root / mounts[volume["name"]].lstrip("/") / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[item["key"]])


def pods_of(kube: Kube, deployment: dict[str, Any]) -> list[dict[str, Any]]:
    """The workload's live pods, newest first."""
    match = deployment["spec"]["selector"]["matchLabels"]
    selector = ",".join(f"{k}={v}" for k, v in match.items())
    items = kube.list("v1", "Pod", deployment["metadata"]["namespace"], selector)
    live = [p for p in items if not p["metadata"].get("deletionTimestamp")]
    return sorted(live, key=lambda p: p["metadata"]["creationTimestamp"], reverse=True)


def mark_ready(kube: Kube, pod: dict[str, Any]) -> None:
    """What a kubelet reports once the readiness probe passes: Running, Ready."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ready = [
        {"type": t, "status": "True", "lastTransitionTime": now} for t in ("Initialized", "ContainersReady", "Ready")
    ]
    status = {"phase": "Running", "conditions": ready, "startTime": now}
    meta = pod["metadata"]
    kube.request(
        "PATCH",
        f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
        body={"status": status},
        content_type="application/merge-patch+json",
    )


def workload(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    """The Deployment or StatefulSet of that name (gateways and projectors, or command handlers)."""
    return kube.get("apps/v1", "Deployment", namespace, name) or kube.get("apps/v1", "StatefulSet", namespace, name)


def start_pods(
    kube: Kube, workload_name: str, namespace: str, root: Path, count: int = 1, timeout: float = 90.0
) -> list[LocalPod]:
    """Run ``count`` of the workload's pods locally; mark each Ready once its /readyz says so.

    A StatefulSet pod's mounts land under ``root/<pod name>``: a pod recreated with the same name finds
    them again, as it would its PersistentVolumeClaim.
    """

    def workload_pods() -> list[dict[str, Any]] | None:
        found_workload = workload(kube, namespace, workload_name)
        found = pods_of(kube, found_workload) if found_workload else []
        return found if len(found) >= count else None

    pods = wait_for(f"{count} pods of {workload_name}", workload_pods, 60)[:count]
    started = [run_pod_locally(kube, pod, root) for pod in pods]
    for pod, local in zip(pods, started, strict=True):

        def ready(local: LocalPod = local) -> bool:
            if local.proc.poll() is not None:
                raise AssertionError(f"{local.argv} exited with {local.proc.returncode}:\n{local.log_tail()}")
            return http_ok(local.port, "/readyz")

        wait_for(f"/readyz of {local.name}", ready, timeout)
        mark_ready(kube, pod)
    return started


def manifest(kind: str, name: str, namespace: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name, "namespace": namespace, **meta}, "spec": spec}


def plural_of(kind: str) -> str:
    """The resource's plural, as the CRDs and the core API spell it (Policy → policies)."""
    lower = kind.lower()
    return lower[:-1] + "ies" if lower.endswith("y") else lower + "s"


def create(kube: Kube, obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    plural = plural_of(obj["kind"])
    base = "/api/v1" if obj["apiVersion"] == "v1" else f"/apis/{obj['apiVersion']}"
    path = f"{base}/namespaces/{meta['namespace']}/{plural}" if meta.get("namespace") else f"{base}/{plural}"
    out = kube.request("POST", path, body=obj)
    assert out is not None
    return out


def patch(kube: Kube, kind: str, namespace: str, name: str, body: dict[str, Any], api: str = API) -> dict[str, Any]:
    base = "/api/v1" if api == "v1" else f"/apis/{api}"
    out = kube.request(
        "PATCH",
        f"{base}/namespaces/{namespace}/{plural_of(kind)}/{name}",
        body=body,
        content_type="application/merge-patch+json",
    )
    assert out is not None
    return out


def events_of(kube: Kube, namespace: str, name: str) -> list[tuple[str, str]]:
    items = kube.list("v1", "Event", namespace)
    return [
        (e.get("reason", ""), e.get("message", ""))
        for e in items
        if (e.get("involvedObject") or {}).get("name") == name
    ]


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)[:4000]
