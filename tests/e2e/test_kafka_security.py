"""The operator with Kafka credentials in a Secret, against the development broker's SASL_SSL listener:
topics made over SASL_SSL, the handler it declares (run here from its pod spec, its env resolved from the
Secret, the CA written where the Secret volume mounts it) handles a command, and no password reaches the
Deployment, the status, an Event or the operator's log; a wrong password reads KafkaAuthenticationFailed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from foldline.dev.kafka import DevKafka
from foldline_operator.kube import Kube
from tests.e2e.support import ESA, OperatorProcess, condition, create, events_of, manifest, patch, start_pods, wait_for
from tests.e2e.test_aggregate import CREATE, esa, settled, statefulset
from tests.kafka_support import command, send, wait_for_results

pytestmark = pytest.mark.e2e


def test_credentials_from_a_secret_never_leak(
    kube: Kube,
    operator: OperatorProcess,
    namespace: str,
    kafka_bootstrap: str,
    aggregate_name: Callable[[], str],
    tmp_path: Path,
) -> None:
    secure = DevKafka().secure_listener()
    password = secure.password
    name = aggregate_name()
    create(
        kube,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "kafka-auth", "namespace": namespace},
            "stringData": {
                "security.protocol": "sasl_ssl",
                "sasl.mechanism": secure.mechanism,
                "sasl.username": secure.username,
                "sasl.password": password,
                "ca.crt": secure.ca_location.read_text(),
            },
        },
    )
    spec = {
        "aggregate": f"tests.named_invoices:{name.replace('-', '_')}",
        "image": "foldline:dev",
        "partitions": 2,
        "replicationFactor": 1,
        "kafka": {"bootstrapServers": secure.bootstrap, "secretRef": {"name": "kafka-auth"}},
        "handlers": {"replicas": 1, "storage": {"storeKind": "sqlite"}},
    }
    create(kube, manifest(ESA, name, namespace, spec))
    settled(kube, namespace, name, "TopicsReady", "True", "Verified")  # made over SASL_SSL by the operator

    handler = statefulset(kube, namespace, f"{name}-command-handler")
    env = {e["name"]: e for e in handler["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FOLDLINE_KAFKA_SASL_PASSWORD"] == {
        "name": "FOLDLINE_KAFKA_SASL_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "kafka-auth", "key": "sasl.password"}},
    }
    local = start_pods(kube, f"{name}-command-handler", namespace, tmp_path)
    try:
        send(kafka_bootstrap, f"{name}.commands", [command("inv-1", "CreateInvoice", CREATE, command_id="c-1")])
        [result] = wait_for_results(kafka_bootstrap, name, 1, timeout=60)
        assert (result.command_id, result.status) == ("c-1", "accepted")
        settled(kube, namespace, name, "Ready", "True")
        wait_for("lag 0 in status", lambda: esa(kube, namespace, name)["status"].get("lag") == 0, 30)
    finally:
        for pod in local:
            pod.stop()
    handler_log = local[0].log.read_text(errors="replace")

    # A wrong password: refused, named, nothing changed; the wrong one is not shown either.
    wrong = "wrong-" + uuid.uuid4().hex
    patch(kube, "Secret", namespace, "kafka-auth", {"stringData": {"sasl.password": wrong}}, api="v1")

    def refused_login() -> dict[str, Any] | None:
        found = esa(kube, namespace, name)
        return found if condition(found, "TopicsReady").get("reason") == "KafkaAuthenticationFailed" else None

    refused = wait_for("TopicsReady=False KafkaAuthenticationFailed", refused_login, 90)
    assert "SASL authentication error" in condition(refused, "TopicsReady")["message"]

    seen = json.dumps(
        [
            esa(kube, namespace, name),
            statefulset(kube, namespace, f"{name}-command-handler"),
            events_of(kube, namespace, name),
        ]
    )
    logs = "".join(p.read_text(errors="replace") for p in operator.log_dir.glob("operator-*.log"))
    for secret in (password, wrong):
        assert secret not in seen and secret not in logs and secret not in handler_log
    assert password not in operator.metrics()
