"""The one-node cluster runs real pods: what foldline's chart and operator will rely on.

A busybox Deployment behind a ClusterIP Service; exec, logs and port-forward through the kubelet;
pod-to-pod, pod-to-Service, host-to-Service and pod-to-host traffic; ServiceAccount tokens accepted by
the API server; ConfigMap, Secret and emptyDir volumes in a pod running as uid 10001 with a read-only
root filesystem (as foldline's pods do).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.cluster.conftest import BUSYBOX
from tests.cluster.node import Cluster, wait_for

pytestmark = pytest.mark.cluster

WEB = "web"
WEB_PORT = 8080
# Each web pod serves its own name, so a reply says which pod answered.
WEB_COMMAND = (
    'mkdir -p /www && echo "$POD_NAME" > /www/index.html && echo "serving as $POD_NAME" '
    f"&& exec httpd -f -v -p {WEB_PORT} -h /www"
)


def _web_objects() -> list[dict[str, Any]]:
    labels = {"app": WEB}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": WEB},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "httpd",
                            "image": BUSYBOX,
                            "imagePullPolicy": "Never",
                            "command": ["/bin/sh", "-c", WEB_COMMAND],
                            "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                            "ports": [{"containerPort": WEB_PORT}],
                            "readinessProbe": {"httpGet": {"path": "/", "port": WEB_PORT}, "periodSeconds": 1},
                            "resources": {"limits": {"memory": "32Mi", "cpu": "200m"}},
                        }
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": WEB},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": WEB_PORT}]},
    }
    return [deployment, service]


@pytest.fixture(scope="module")
def web(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    """The web Deployment, Available, and its Service with both pods as endpoints; returns the pods."""
    cluster.apply(*_web_objects(), namespace=namespace)
    cluster.wait_available(namespace, WEB)

    def both_endpoints() -> list[str] | None:
        out = cluster.kubectl(
            "get", "endpointslices", "-n", namespace, "-l", f"kubernetes.io/service-name={WEB}", "-o", "json"
        ).stdout
        ready = [
            a
            for s in json.loads(out)["items"]
            for e in s.get("endpoints") or []
            if (e.get("conditions") or {}).get("ready")
            for a in e["addresses"]
        ]
        return ready if len(ready) == 2 else None

    wait_for(f"service {WEB} with two ready endpoints", both_endpoints, timeout=60)
    pods = cluster.pods(namespace, f"app={WEB}")
    assert len(pods) == 2
    return pods


@pytest.fixture(scope="module")
def client(cluster: Cluster, namespace: str) -> str:
    """A plain busybox pod to run wget/nc from."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX,
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", "exec sleep 100000"],
                }
            ],
        },
    }
    cluster.apply(pod, namespace=namespace)
    cluster.wait_pod_ready(namespace, "client")
    return "client"


def _pod_ips(pods: list[dict[str, Any]]) -> dict[str, str]:
    return {p["metadata"]["name"]: p["status"]["podIP"] for p in pods}


def _wget(cluster: Cluster, namespace: str, pod: str, url: str) -> str:
    # `timeout`, not wget's own -T: Debian's busybox 1.35 wget crashes (SIGSEGV) with -T.
    return cluster.exec(namespace, pod, "timeout", "15", "wget", "-q", "-O", "-", url).stdout.strip()


def test_deployment_pods_run_on_the_node_with_ips_from_the_pod_network(cluster: Cluster, web: list[dict]) -> None:
    pod_cidr = ipaddress.ip_network(cluster.env["FOLDLINE_CLUSTER_POD_CIDR"])
    for pod in web:
        assert pod["status"]["phase"] == "Running"
        assert pod["spec"]["nodeName"] == "foldline-node"
        assert ipaddress.ip_address(pod["status"]["podIP"]) in pod_cidr
        assert pod["status"]["hostIP"] == cluster.node_ip


def test_exec_and_logs_go_through_the_kubelet(cluster: Cluster, namespace: str, web: list[dict]) -> None:
    name = web[0]["metadata"]["name"]
    assert cluster.exec(namespace, name, "cat", "/www/index.html").stdout.strip() == name
    # exec reports the command's exit status, so a failing command is seen as failing.
    failed = cluster.exec(namespace, name, "sh", "-c", "exit 3", check=False)
    assert failed.returncode == 3
    logs = cluster.kubectl("logs", "-n", namespace, name).stdout
    assert f"serving as {name}" in logs


def test_pod_to_pod_traffic(cluster: Cluster, namespace: str, web: list[dict], client: str) -> None:
    for name, ip in _pod_ips(web).items():
        assert _wget(cluster, namespace, client, f"http://{ip}:{WEB_PORT}/") == name
    # And between the web pods themselves (same bridge, both directions).
    (a, ip_a), (b, ip_b) = _pod_ips(web).items()
    assert _wget(cluster, namespace, a, f"http://{ip_b}:{WEB_PORT}/") == b
    assert _wget(cluster, namespace, b, f"http://{ip_a}:{WEB_PORT}/") == a


def _cluster_ip(cluster: Cluster, namespace: str) -> str:
    svc = cluster.get("service", WEB, namespace)
    assert svc is not None
    ip = str(svc["spec"]["clusterIP"])
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(cluster.env["FOLDLINE_CLUSTER_SERVICE_CIDR"])
    return ip


def test_cluster_ip_service_from_a_pod_reaches_every_backend(
    cluster: Cluster, namespace: str, web: list[dict], client: str
) -> None:
    ip = _cluster_ip(cluster, namespace)
    names = set(_pod_ips(web))
    # kube-proxy picks a backend at random per connection: both must answer within a bounded number of tries.
    seen: set[str] = set()
    for _ in range(60):
        seen.add(_wget(cluster, namespace, client, f"http://{ip}/"))
        if seen == names:
            break
    assert seen == names
    # A backend reaching its own Service (hairpin through the bridge) works too.
    own = web[0]["metadata"]["name"]
    assert _wget(cluster, namespace, own, f"http://{ip}/") in names


def test_cluster_ip_service_from_the_host(cluster: Cluster, namespace: str, web: list[dict]) -> None:
    ip = _cluster_ip(cluster, namespace)
    with urllib.request.urlopen(f"http://{ip}/", timeout=10) as reply:
        assert reply.read().decode().strip() in set(_pod_ips(web))


class _HostServer:
    """A TCP server on the node's address, as Kafka and PostgreSQL will be: answers each line, records peers."""

    def __init__(self, host: str) -> None:
        self.sock = socket.create_server((host, 0))
        self.sock.settimeout(0.5)
        self.port = int(self.sock.getsockname()[1])
        self.peers: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, (peer, _) = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                self.peers.append(peer)
                data = conn.recv(1024)
                conn.sendall(b"host says: " + data)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def host_server(cluster: Cluster) -> Iterator[_HostServer]:
    server = _HostServer(cluster.node_ip)
    yield server
    server.close()


def test_a_pod_reaches_a_server_on_the_node_address(
    cluster: Cluster, namespace: str, client: str, host_server: _HostServer
) -> None:
    reply = cluster.exec(
        namespace, client, "sh", "-c", f"echo ping | nc -w 10 {cluster.node_ip} {host_server.port}"
    ).stdout
    assert reply.strip() == "host says: ping"
    pod_ip = cluster.get("pod", client, namespace)["status"]["podIP"]  # type: ignore[index]
    # The connection came straight from the pod (no NAT on the way to the host).
    assert host_server.peers == [pod_ip]


def test_service_account_token_is_accepted_by_the_api_server(cluster: Cluster, namespace: str, client: str) -> None:
    # The API server's `kubernetes` Service has the node's address as its endpoint...
    endpoints = cluster.get("endpoints", "kubernetes", "default")
    assert endpoints is not None
    assert [a["ip"] for s in endpoints["subsets"] for a in s["addresses"]] == [cluster.node_ip]
    # ...a pod reaches it through the Service's ClusterIP (plain HTTP to a TLS port: Go's server says so; busybox
    # has no TLS client that this server's cipher suites accept)...
    request = r'printf "GET / HTTP/1.0\r\n\r\n" | nc -w 10 "$KUBERNETES_SERVICE_HOST" "$KUBERNETES_SERVICE_PORT"'
    reply = cluster.exec(namespace, client, "sh", "-c", request)
    assert "Client sent an HTTP request to an HTTPS server" in reply.stdout
    # ...and the pod's projected ServiceAccount token authenticates it there.
    token = cluster.exec(namespace, client, "cat", "/var/run/secrets/kubernetes.io/serviceaccount/token").stdout
    user = cluster.kubectl("auth", "whoami", "--token", token.strip(), "-o", "jsonpath={.status.userInfo.username}")
    assert user.stdout == f"system:serviceaccount:{namespace}:default"
    ca = cluster.exec(namespace, client, "cat", "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt").stdout
    assert "BEGIN CERTIFICATE" in ca
    # The root CA publisher put the cluster's CA into the namespace, where the projected volume takes it from.
    root_ca = cluster.get("configmap", "kube-root-ca.crt", namespace)
    assert root_ca is not None and root_ca["data"]["ca.crt"] == ca


@pytest.fixture(scope="module")
def locked_down(cluster: Cluster, namespace: str) -> str:
    """A pod like foldline's: uid 10001, read-only root fs, ConfigMap + Secret + emptyDir volumes."""
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"mode": "strict"}}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "stringData": {"password": "s3cret"}}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "locked-down"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "runAsNonRoot": True, "fsGroup": 10001},
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX,
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", "exec sleep 100000"],
                    "securityContext": {
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [
                        {"name": "settings", "mountPath": "/etc/settings", "readOnly": True},
                        {"name": "creds", "mountPath": "/etc/creds", "readOnly": True},
                        {"name": "state", "mountPath": "/var/lib/state"},
                    ],
                }
            ],
            "volumes": [
                {"name": "settings", "configMap": {"name": "settings"}},
                {"name": "creds", "secret": {"secretName": "creds"}},
                {"name": "state", "emptyDir": {}},
            ],
        },
    }
    cluster.apply(config, secret, pod, namespace=namespace)
    cluster.wait_pod_ready(namespace, "locked-down")
    return "locked-down"


def test_configmap_secret_and_emptydir_volumes(cluster: Cluster, namespace: str, locked_down: str) -> None:
    assert cluster.exec(namespace, locked_down, "cat", "/etc/settings/mode").stdout == "strict"
    assert cluster.exec(namespace, locked_down, "cat", "/etc/creds/password").stdout == "s3cret"
    cluster.exec(namespace, locked_down, "sh", "-c", "echo kept > /var/lib/state/f")
    assert cluster.exec(namespace, locked_down, "cat", "/var/lib/state/f").stdout.strip() == "kept"
    # A ConfigMap change reaches the mounted file (the kubelet syncs it) without a restart.
    cluster.kubectl("patch", "configmap", "settings", "-n", namespace, "-p", '{"data":{"mode":"relaxed"}}')
    wait_for(
        "the ConfigMap update in the pod's volume",
        lambda: cluster.exec(namespace, locked_down, "cat", "/etc/settings/mode").stdout == "relaxed",
        timeout=120,
        interval=2,
    )


def test_read_only_root_fs_as_uid_10001(cluster: Cluster, namespace: str, locked_down: str) -> None:
    assert cluster.exec(namespace, locked_down, "id", "-u").stdout.strip() == "10001"
    denied = cluster.exec(namespace, locked_down, "touch", "/probe", check=False)
    assert denied.returncode != 0
    assert "Read-only file system" in denied.stderr
    # The emptyDir is writable for the pod's user (fsGroup).
    cluster.exec(namespace, locked_down, "touch", "/var/lib/state/probe")


def test_port_forward_from_the_test_to_a_pod(cluster: Cluster, namespace: str, web: list[dict]) -> None:
    name = web[1]["metadata"]["name"]
    with cluster.port_forward(namespace, f"pod/{name}", WEB_PORT) as port:
        for _ in range(3):  # several connections over one forward
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
                assert reply.read().decode().strip() == name


def test_run_pod_helper_runs_a_pod_to_ready(cluster: Cluster, namespace: str, run_pod: Callable[..., str]) -> None:
    name = run_pod(
        "one-shot",
        "touch /tmp/ready && exec sleep 100000",
        container={"readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1}},
    )
    assert cluster.exec(namespace, name, "ls", "/tmp/ready").returncode == 0


def test_memory_limit_is_enforced_with_an_oom_kill(cluster: Cluster, namespace: str) -> None:
    # tail -c keeps the last 64 MiB in memory: far past the 16 MiB limit (cgroup v1 memory controller).
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hog"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX,
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", "head -c 64m /dev/zero | tail -c 64m > /dev/null"],
                    "resources": {"limits": {"memory": "16Mi"}},
                }
            ],
        },
    }
    cluster.apply(pod, namespace=namespace)

    def terminated() -> dict[str, Any] | None:
        obj = cluster.get("pod", "hog", namespace) or {}
        for status in (obj.get("status") or {}).get("containerStatuses") or []:
            state = (status.get("state") or {}).get("terminated")
            if state:
                return dict(state)
        return None

    state = wait_for("pod hog terminated", terminated, timeout=120)
    assert state["reason"] == "OOMKilled", state
