"""The chart's real pods: `helm install`, the invoices example, and invoices flowing through real pods.

This is the README's "Run it on Kubernetes" section, run for real on the one-node cluster: the image
built by `make install` is loaded into the node's containerd, the chart's operator pod reconciles the
example's EventSourcedAggregate and Projection into topics and Deployments, and commands go through
the gateway's Service (by `kubectl port-forward`, through the kubelet). Kafka and PostgreSQL run on the
host, listening on the node's own address so that pods reach them. Checks read the topics
read_committed and the view through the gateway, as a user would.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from confluent_kafka.admin import AdminClient

from foldline import AggregateSpec, CommandResult, EventRecord, SnapshotRecord
from foldline.dev.kafka import DevKafka
from foldline.dev.postgres import DevPostgres
from foldline.examples.invoices import Invoices
from foldline.topics import TopicNames
from tests.cluster.node import Cluster, wait_for
from tests.conftest import REPO
from tests.kafka_support import read_topic, results

pytestmark = pytest.mark.cluster

IMAGE_ARCHIVE = REPO / ".cache" / "images" / "foldline-0.1.0.tar"
EXAMPLE = REPO / "manifests" / "examples" / "invoices.yaml"
RELEASE, OPERATOR_NS, APP_NS = "foldline", "foldline-system", "invoices"
# Ports of their own: the other suites' broker and database run beside these on loopback.
KAFKA_PORT, POSTGRES_PORT = 19392, 15632
CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}
#: The node has no volume provisioner: the handlers' claims bind to local PersistentVolumes made here.
STORAGE_CLASS = "foldline-cluster-test"
VOLUMES = 4  # three handler pods at most (the scale test), one spare


class Flow:
    """What the ordered tests of this module share: addresses, timings, every command id sent."""

    def __init__(self, cluster: Cluster, bootstrap: str, dsn: str) -> None:
        self.cluster, self.bootstrap, self.dsn = cluster, bootstrap, dsn
        self.sent: list[str] = []
        self.installed_at = 0.0
        self.figures: dict[str, float] = {}

    def post(self, client: httpx.Client, aggregate_id: str, kind: str, payload: dict[str, Any], **query: str) -> Any:
        body = {"aggregate_id": aggregate_id, "type": kind, "payload": payload}
        response = client.post("/aggregates/invoices/commands", json=body, params=query, timeout=60)
        assert response.status_code in (200, 202), response.text
        answer = response.json()
        self.sent.append(answer["command_id"])
        return answer


@pytest.fixture(scope="module")
def flow(cluster: Cluster) -> Iterator[Flow]:
    """Kafka and PostgreSQL on the node's address, the image in the node, the chart installed."""
    kafka = DevKafka(port=KAFKA_PORT, host=cluster.node_ip)
    postgres = DevPostgres(
        port=POSTGRES_PORT, host=cluster.node_ip, clients=(cluster.env["FOLDLINE_CLUSTER_POD_CIDR"],)
    )
    assert IMAGE_ARCHIVE.is_file(), f"{IMAGE_ARCHIVE} is missing: `make install` builds it (scripts/image.sh build)"
    volumes_dir: Path | None = None
    try:
        kafka.stop()  # one left by an interrupted run listens where the last node was: start afresh
        bootstrap = kafka.start()  # a fresh data dir on every start
        # A database of this run's own: the server's data survives runs, and a catalog left by an earlier run
        # (revision 2 active) would make this run's revision 1 a superseded one.
        database = f"cluster_{uuid.uuid4().hex[:10]}"
        postgres.stop()
        with psycopg.connect(postgres.start(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        dsn = postgres.dsn.rsplit("/", 1)[0] + f"/{database}"
        cluster.load_image(IMAGE_ARCHIVE)
        volumes_dir = _local_volumes(cluster)
        state = Flow(cluster, bootstrap, dsn)
        yield state
        print("\ncluster figures: " + ", ".join(f"{k} {v:.1f} s" for k, v in state.figures.items()))
    finally:
        _uninstall_everything(cluster)
        cluster.kubectl("delete", "pv", "-l", f"foldline.io/test={STORAGE_CLASS}", "--ignore-not-found", check=False)
        cluster.kubectl("delete", "storageclass", STORAGE_CLASS, "--ignore-not-found", check=False)
        if volumes_dir is not None:
            shutil.rmtree(volumes_dir, ignore_errors=True)
        kafka.stop()
        postgres.stop()


def _local_volumes(cluster: Cluster) -> Path:
    """A StorageClass without a provisioner and ``VOLUMES`` local PersistentVolumes on the node's disk.

    The directories are world-writable: the pods run as uid 10001 (the kubelet also applies fsGroup to
    local volumes, this does not depend on it)."""
    root = Path(tempfile.mkdtemp(prefix="foldline-pv-", dir="/var/tmp"))
    root.chmod(0o755)
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer",
        }
    ]
    for i in range(VOLUMES):
        path = root / f"pv-{i}"
        path.mkdir()
        path.chmod(0o777)
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"{STORAGE_CLASS}-{i}", "labels": {"foldline.io/test": STORAGE_CLASS}},
                "spec": {
                    "capacity": {"storage": "2Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": STORAGE_CLASS,
                    "local": {"path": str(path)},
                    "nodeAffinity": {
                        "required": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "Exists"}]}
                            ]
                        }
                    },
                },
            }
        )
    cluster.apply(*objects)
    return root


def _uninstall_everything(cluster: Cluster) -> None:
    """Best effort after a failure; the last test checks the same path strictly."""
    cluster.kubectl("delete", "namespace", APP_NS, "--ignore-not-found", "--wait=false", check=False)
    cluster.helm("uninstall", RELEASE, "-n", OPERATOR_NS, "--ignore-not-found", check=False, timeout=180)
    cluster.kubectl("delete", "namespace", OPERATOR_NS, "--ignore-not-found", "--wait=false", check=False)


def example_objects(bootstrap: str, dsn: str) -> list[dict[str, Any]]:
    """manifests/examples/invoices.yaml with this machine's Kafka and database, as its comment says to do.

    One broker here: replication factor 1. Fixed handler replicas instead of autoscaling, so that
    `kubectl scale` is what changes them. The handlers' claims use the local volumes of this test.
    """
    objects = [o for o in yaml.safe_load_all(EXAMPLE.read_text()) if o]
    for obj in objects:
        if obj["kind"] == "Secret":
            obj["stringData"]["url"] = dsn
        elif obj["kind"] == "EventSourcedAggregate":
            spec = obj["spec"]
            spec["kafka"]["bootstrapServers"] = bootstrap
            spec["replicationFactor"] = 1
            spec["partitions"] = 6
            spec["handlers"].pop("autoscaling", None)
            spec["handlers"]["replicas"] = 2
            spec["handlers"]["storage"]["storageClassName"] = STORAGE_CLASS
            spec["gateway"]["replicas"] = 1
    return objects


def _condition(obj: dict[str, Any] | None, kind: str) -> bool:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == kind and c["status"] == "True" for c in conditions)


def _ready_pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    return [
        p
        for p in cluster.pods(namespace, selector)
        if p["metadata"].get("deletionTimestamp") is None
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
    ]


def _gateway(cluster: Cluster) -> Any:
    return cluster.port_forward(APP_NS, "service/invoices-gateway", 80)


def test_helm_install_runs_the_operator_pod(flow: Flow) -> None:
    cluster = flow.cluster
    flow.installed_at = time.monotonic()
    cluster.helm("install", RELEASE, str(REPO / "charts" / "foldline"), "-n", OPERATOR_NS, "--create-namespace")
    deployment = cluster.wait_available(OPERATOR_NS, "foldline", timeout=300)
    assert deployment["status"]["readyReplicas"] == 2
    [pod, *_] = _ready_pods(cluster, OPERATOR_NS, "app.kubernetes.io/name=foldline")
    assert pod["spec"]["containers"][0]["image"] == "foldline:0.1.0"
    # The real pod runs as the image's user on a read-only root filesystem.
    out = cluster.exec(OPERATOR_NS, pod["metadata"]["name"], "python3", "-c", "import os; print(os.getuid())")
    assert out.stdout.strip() == "10001"
    probe = cluster.exec(OPERATOR_NS, pod["metadata"]["name"], "touch", "/opt/foldline/x", check=False)
    assert probe.returncode != 0 and "Read-only file system" in probe.stderr
    flow.figures["helm install -> operator Ready"] = time.monotonic() - flow.installed_at


def test_the_example_runs_in_pods_and_answers_commands(flow: Flow) -> None:
    cluster = flow.cluster
    cluster.kubectl("create", "namespace", APP_NS)
    # No Secret is readable cluster-wide: the namespace's owner lets the operator read this one's.
    cluster.kubectl(
        "create",
        "rolebinding",
        "foldline-secrets",
        "-n",
        APP_NS,
        "--clusterrole=foldline-secrets",
        f"--serviceaccount={OPERATOR_NS}:foldline",
    )
    wait_for("serviceaccount default", lambda: cluster.get("serviceaccount", "default", APP_NS), timeout=60)
    cluster.apply(*example_objects(flow.bootstrap, flow.dsn), namespace=APP_NS)

    def ready_aggregate() -> dict[str, Any] | None:
        esa = cluster.get("eventsourcedaggregate", "invoices", APP_NS)
        return esa if _condition(esa, "Ready") else None

    esa = wait_for("EventSourcedAggregate invoices Ready", ready_aggregate, timeout=300)
    assert esa["status"]["partitions"] == 6
    topics = AdminClient({"bootstrap.servers": flow.bootstrap}).list_topics(timeout=10).topics
    assert {f"invoices.{t}" for t in ("commands", "events", "snapshots", "command-results")} <= set(topics)
    assert len(_ready_pods(cluster, APP_NS, "app.kubernetes.io/component=command-handler")) == 2
    cluster.wait_available(APP_NS, "invoices-gateway", timeout=300)
    cluster.wait_available(APP_NS, "invoice-list-projector-r1", timeout=300)

    with _gateway(cluster) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        created = flow.post(client, "inv-1", "CreateInvoice", CREATE)
        flow.figures["helm install -> first command's result"] = time.monotonic() - flow.installed_at
        assert created["status"] == "accepted" and created["version"] == 1, created
        item = {"line_id": "l1", "description": "work", "quantity": 2, "unit_price": "10.00"}
        assert flow.post(client, "inv-1", "AddLineItem", item)["version"] == 2
        rejected = client.post(
            "/aggregates/invoices/commands",
            json={
                "aggregate_id": "inv-1",
                "type": "RecordPayment",
                "payload": {"payment_id": "p1", "amount": "5.00", "currency": "USD"},
            },
        )
        assert rejected.status_code == 422, rejected.text  # the domain's rule, answered from a pod
        rows = client.get("/views/invoice-list/rows", params={"aggregate_id": "inv-1", "min_version": 2}, timeout=60)
        assert rows.status_code == 200, rows.text
        [row] = rows.json()["rows"]
        assert (row["customer"], row["total"]) == ("ACME", "20.00")


def test_a_handler_pod_deleted_while_commands_flow_loses_and_duplicates_nothing(flow: Flow) -> None:
    cluster = flow.cluster
    selector = "app.kubernetes.io/component=command-handler"
    errors: list[str] = []

    with _gateway(cluster) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:

        def send() -> None:
            for n in range(40):
                for i in range(10):
                    try:
                        if n == 0:
                            flow.post(client, f"flow-{i}", "CreateInvoice", CREATE, wait="false")
                        else:
                            line = {"line_id": f"l{n}", "description": "work", "quantity": 1, "unit_price": "1.00"}
                            flow.post(client, f"flow-{i}", "AddLineItem", line, wait="false")
                    except (AssertionError, httpx.HTTPError) as exc:  # reported below, never hidden
                        errors.append(repr(exc))
                time.sleep(0.05)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        time.sleep(2)
        victim = _ready_pods(cluster, APP_NS, selector)[0]["metadata"]
        cluster.kubectl("delete", "pod", victim["name"], "-n", APP_NS, "--wait=false")
        sender.join(timeout=300)
    assert not sender.is_alive() and not errors, errors[:5]

    def back() -> bool:
        pods = _ready_pods(cluster, APP_NS, selector)
        return len(pods) == 2 and victim["uid"] not in {p["metadata"]["uid"] for p in pods}

    # A StatefulSet pod comes back under its own name, on its own claim (with its store).
    wait_for("two handler pods Ready again, the deleted one replaced", back, timeout=300)
    assert victim["name"] in {p["metadata"]["name"] for p in _ready_pods(cluster, APP_NS, selector)}
    assert_exactly_once(flow)


def test_kubectl_scale_moves_partitions_and_nothing_is_lost(flow: Flow) -> None:
    cluster = flow.cluster
    selector = "app.kubernetes.io/component=command-handler"
    cluster.kubectl("scale", "eventsourcedaggregate/invoices", "-n", APP_NS, "--replicas=3")
    wait_for("three handler pods Ready", lambda: len(_ready_pods(cluster, APP_NS, selector)) == 3, timeout=300)
    with _gateway(cluster) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        for i in range(10):
            line = {"line_id": "after-scale", "description": "work", "quantity": 1, "unit_price": "1.00"}
            assert flow.post(client, f"flow-{i}", "AddLineItem", line)["status"] == "accepted"
    group = "foldline.invoices.command-handler"
    admin = AdminClient({"bootstrap.servers": flow.bootstrap})
    assignment = wait_for("the six partitions spread over three members", lambda: _spread(admin, group), timeout=120)
    assert sorted(len(parts) for parts in assignment) == [2, 2, 2]
    assert_exactly_once(flow)


def _spread(admin: AdminClient, group: str) -> list[list[int]] | None:
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    owned = [[tp.partition for tp in m.assignment.topic_partitions] for m in description.members]
    return owned if len(owned) == 3 and all(owned) and sum(map(len, owned)) == 6 else None


def test_a_new_projection_revision_rebuilds_in_a_pod_and_switches(flow: Flow) -> None:
    cluster = flow.cluster
    patch = '{"spec": {"projector": "foldline.examples.invoices.views:InvoiceListV2", "revision": 2}}'
    cluster.kubectl("patch", "projection", "invoice-list", "-n", APP_NS, "--type=merge", "-p", patch)
    cluster.wait_available(APP_NS, "invoice-list-projector-r2", timeout=300)
    wait_for(
        "revision 2 serving",
        lambda: (
            ((cluster.get("projection", "invoice-list", APP_NS) or {}).get("status") or {}).get("activeRevision") == 2
        ),
        timeout=300,
    )
    wait_for(
        "revision 1's projector retired",
        lambda: cluster.get("deployment", "invoice-list-projector-r1", APP_NS) is None,
        timeout=300,
    )
    cluster.wait_available(APP_NS, "invoices-gateway", timeout=300)  # it now serves the new revision's class
    with _gateway(cluster) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        rows = client.get("/views/invoice-list/rows", params={"aggregate_id": "inv-1"}, timeout=60)
        assert rows.status_code == 200, rows.text
        [row] = rows.json()["rows"]
        assert row["line_count"] == 1  # a column only revision 2 has, rebuilt from the log


def test_helm_uninstall_and_namespace_deletion_complete(flow: Flow) -> None:
    cluster = flow.cluster
    cluster.kubectl("delete", "namespace", APP_NS, "--timeout=180s")
    cluster.helm("uninstall", RELEASE, "-n", OPERATOR_NS, "--wait", "--timeout", "180s", timeout=240)
    cluster.kubectl("delete", "namespace", OPERATOR_NS, "--timeout=180s")
    assert cluster.get("namespace", APP_NS) is None and cluster.get("namespace", OPERATOR_NS) is None


def assert_exactly_once(flow: Flow) -> None:
    """Every command sent has exactly one result; events have no gaps and each snapshot is their fold."""

    def all_answered() -> list[CommandResult] | None:
        got = results(flow.bootstrap, "invoices")
        return got if set(flow.sent) <= {r.command_id for r in got} else None

    try:  # a restarted handler pod may still be working through the backlog
        got = wait_for("a result for every command sent", all_answered, timeout=300, interval=2)
    except AssertionError:
        got = results(flow.bootstrap, "invoices")
        missing = set(flow.sent) - {r.command_id for r in got}
        raise AssertionError(f"{len(missing)} of {len(flow.sent)} commands have no result") from None
    per_command = Counter(r.command_id for r in got)
    duplicated = {k: v for k, v in per_command.items() if v != 1}
    assert not duplicated, f"{len(duplicated)} commands have more than one result"
    names = TopicNames("invoices")
    events: dict[str, list[EventRecord]] = defaultdict(list)
    for msg in read_topic(flow.bootstrap, names.events):
        record = EventRecord.from_bytes(msg.value())
        events[record.aggregate_id].append(record)
    assert sum(map(len, events.values())) == sum(len(r.events) for r in got)
    spec = AggregateSpec(Invoices())
    snapshots = {
        m.key().decode(): SnapshotRecord.from_bytes(m.value()) for m in read_topic(flow.bootstrap, names.snapshots)
    }
    for aggregate_id, records in events.items():
        assert [e.version for e in records] == list(range(1, len(records) + 1)), aggregate_id
        folded = spec.aggregate.fold(spec.decode_event(e.type, e.schema_version, e.payload) for e in records)
        assert spec.decode_state(snapshots[aggregate_id].schema_version, snapshots[aggregate_id].state) == folded
