"""The control loop under trouble: an unreachable Kafka does not starve the healthy resources, and drift
of an owned Deployment or StatefulSet is repaired from the watch, not at the next resync."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from foldline_operator.kube import Kube
from tests.e2e.support import (
    API,
    ESA,
    OperatorProcess,
    condition,
    create,
    http_ok,
    manifest,
    patch,
    start_pods,
    wait_for,
)
from tests.e2e.test_aggregate import settled
from tests.e2e.test_operator_process import spec_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """A loopback address that accepts TCP connections (the kernel completes the handshake) and never
    answers a request: a blackholed broker, as far as a client can tell."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        yield f"127.0.0.1:{server.getsockname()[1]}"


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def backoff_delays(operator: OperatorProcess, name: str) -> list[float]:
    """The ``retry_in`` of each "resync backs off" log line of ``name``, in order."""
    delays = []
    for entry in log_entries(operator):
        if entry.get("event") == "dependency unreachable: resync backs off" and entry.get("name") == name:
            delays.append(float(entry["retry_in"]))
    return delays


def drifts(operator: OperatorProcess, kind: str, name: str) -> list[str]:
    """The changes (MODIFIED, DELETED) of ``kind``/``name`` the operator's drift watch acted on."""
    return [
        entry["change"]
        for entry in log_entries(operator)
        if entry.get("event") == "owned object drifted" and (entry.get("kind"), entry.get("name")) == (kind, name)
    ]


def log_entries(operator: OperatorProcess) -> list[dict[str, Any]]:
    out = []
    for line in operator.log_tail(5000).splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def test_unreachable_kafka_does_not_starve_the_healthy_aggregate(
    kube: Kube,
    operator: OperatorProcess,
    namespace: str,
    kafka_bootstrap: str,
    aggregate_name: Callable[[], str],
    silent_broker: str,
    tmp_path: Path,
) -> None:
    # More unreachable aggregates than the operator has worker threads (8), half of them blackholed.
    broken = [aggregate_name() for _ in range(10)]
    for i, name in enumerate(broken):
        spec = {
            **spec_for(name, kafka_bootstrap),
            "kafka": {"bootstrapServers": silent_broker if i % 2 else closed_port()},
        }
        create(kube, manifest(ESA, name, namespace, spec))
    healthy = aggregate_name()
    create(kube, manifest(ESA, healthy, namespace, spec_for(healthy, kafka_bootstrap)))
    try:
        settled(kube, namespace, healthy, "TopicsReady", "True", "Verified", timeout=90)
        local = start_pods(kube, f"{healthy}-command-handler", namespace, tmp_path)
        try:
            settled(kube, namespace, healthy, "Ready", "True", timeout=90)
        finally:
            for pod in local:
                pod.stop()
        for name in broken:
            failing = settled(kube, namespace, name, "TopicsReady", "False", "KafkaUnavailable", timeout=90)
            assert condition(failing, "Ready")["status"] == "False"
            assert kube.get("apps/v1", "StatefulSet", namespace, f"{name}-command-handler") is None
        # The resyncs of a failing one come with growing delays (the operator resyncs every 2 s here).
        delays = wait_for("two backoffs", lambda: (d := backoff_delays(operator, broken[1]))[1:] and d, 90)
        assert delays[1] > delays[0]
        assert not backoff_delays(operator, healthy)
        # Up for longer than FOLDLINE_OPERATOR_LIVENESS_SECONDS by now: the loop's heartbeat keeps it live.
        assert http_ok(operator.port, "/healthz") and http_ok(operator.port, "/readyz")
    finally:
        for name in [*broken, healthy]:
            kube.delete(API, ESA, namespace, name)


@pytest.fixture
def slow_resync(operator: OperatorProcess, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The only operator for the test, resyncing once an hour: what it repairs, the watches repaired."""
    operator.stop()
    slow = OperatorProcess(operator.kubeconfig, tmp_path, operator.peering, resync_seconds=3600)
    slow.start(priority=operator.priority + 5)
    try:
        yield slow
    finally:
        slow.stop()
        operator.start()  # a higher priority than the slow one's


def test_drift_of_owned_workloads_is_repaired_at_once(
    kube: Kube,
    slow_resync: OperatorProcess,
    namespace: str,
    kafka_bootstrap: str,
    aggregate_name: Callable[[], str],
) -> None:
    name = aggregate_name()
    spec = {**spec_for(name, kafka_bootstrap), "gateway": {"enabled": True, "replicas": 1}}
    create(kube, manifest(ESA, name, namespace, spec))
    handler, gateway = f"{name}-command-handler", f"{name}-gateway"
    settled(kube, namespace, name, "TopicsReady", "True")
    first = wait_for("the gateway", lambda: kube.get("apps/v1", "Deployment", namespace, gateway))
    image = first["spec"]["template"]["spec"]["containers"][0]["image"]

    def replicas() -> int | None:
        found = kube.get("apps/v1", "StatefulSet", namespace, handler)
        return None if found is None else int(found["spec"]["replicas"])

    assert replicas() == 1
    patch(kube, "StatefulSet", namespace, handler, {"spec": {"replicas": 3}}, api="apps/v1")
    wait_for("the handlers' replicas back at 1", lambda: replicas() == 1, 30)
    # Repaired by the watch (a pass still running from the creation could have done it too).
    wait_for("the drift seen", lambda: "MODIFIED" in drifts(slow_resync, "StatefulSet", handler), 30)

    container = {"name": first["spec"]["template"]["spec"]["containers"][0]["name"], "image": "elsewhere:1"}
    kube.request(
        "PATCH",
        f"/apis/apps/v1/namespaces/{namespace}/deployments/{gateway}",
        body={"spec": {"template": {"spec": {"containers": [container]}}}},
        content_type="application/strategic-merge-patch+json",
    )

    def gateway_image() -> str | None:
        found = kube.get("apps/v1", "Deployment", namespace, gateway)
        return None if found is None else str(found["spec"]["template"]["spec"]["containers"][0]["image"])

    wait_for("the gateway's image back", lambda: gateway_image() == image, 30)
    wait_for("the drift seen", lambda: "MODIFIED" in drifts(slow_resync, "Deployment", gateway), 30)

    kube.delete("apps/v1", "Deployment", namespace, gateway)
    recreated = wait_for(
        "the gateway recreated",
        lambda: (
            (d := kube.get("apps/v1", "Deployment", namespace, gateway))
            and d["metadata"]["uid"] != first["metadata"]["uid"]
            and d
        ),
        30,
    )
    assert recreated["spec"]["template"]["spec"]["containers"][0]["image"] == image
    wait_for("the deletion seen", lambda: "DELETED" in drifts(slow_resync, "Deployment", gateway), 30)
    gone = kube.get("apps/v1", "StatefulSet", namespace, handler)
    assert gone is not None
    kube.delete("apps/v1", "StatefulSet", namespace, handler)
    wait_for(
        "the handlers' StatefulSet recreated",
        lambda: (
            (s := kube.get("apps/v1", "StatefulSet", namespace, handler))
            and s["metadata"]["uid"] != gone["metadata"]["uid"]
        ),
        30,
    )
