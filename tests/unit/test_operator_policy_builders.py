"""The Policy's owned objects and spec as plain dicts: its worker Deployment and what it runs."""

from __future__ import annotations

from typing import Any

import pytest

from foldline.settings import PolicySettings
from foldline_operator import builders
from foldline_operator.builders import KafkaAuth, Owner
from foldline_operator.policy_builders import policy_deployment, policy_worker_name
from foldline_operator.policy_spec import PolicyResource
from foldline_operator.spec import DEFAULT_STORE, AggregateResource

OWNER = Owner("Policy", "charges", "uid-7", "shop")
SOURCE = AggregateResource.parse(
    "invoices",
    {
        "aggregate": "shop.domain:Invoices",
        "image": "registry/shop:1.2",
        "partitions": 6,
        "kafka": {"bootstrapServers": "kafka:9092", "secretRef": {"name": "kafka-auth"}},
        "serviceAccountName": "shop",
        "imagePullSecrets": [{"name": "pull"}],
    },
)
AUTH = KafkaAuth("kafka-auth", frozenset({"sasl.username", "sasl.password", "ca.crt"}))


def spec(**extra: Any) -> PolicyResource:
    return PolicyResource.parse(
        "charges",
        {"policy": "shop.policies:ChargeOnSend", "sources": [{"name": "invoices"}], **extra},
    )


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_parse_defaults_and_names() -> None:
    s = spec(policyName="invoice-charges")
    assert (s.name, s.sources, s.replicas, s.store_kind, s.replication_factor) == (
        "invoice-charges",
        ("invoices",),
        1,
        DEFAULT_STORE,
        None,
    )
    assert spec().name == "charges"  # metadata.name by default
    with pytest.raises(ValueError, match="at least one"):
        PolicyResource.parse("x", {"policy": "a:B", "sources": []})


def test_worker_deployment_runs_the_policy_cli_with_the_settings_it_reads() -> None:
    d = policy_deployment(OWNER, spec(policyName="invoice-charges", replicas=2), SOURCE, AUTH)
    assert (d["kind"], d["metadata"]["name"], d["spec"]["replicas"]) == ("Deployment", "charges-policy", 2)
    assert d["metadata"]["ownerReferences"][0] == {
        "apiVersion": "foldline.io/v1alpha1",
        "kind": "Policy",
        "name": "charges",
        "uid": "uid-7",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    labels = d["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "policy"
    assert labels["foldline.io/policy"] == "invoice-charges"
    assert labels["foldline.io/aggregate"] == "invoices"
    assert labels["app.kubernetes.io/version"] == "1.2"
    pod = d["spec"]["template"]["spec"]
    c = builders.container_of(d)
    assert c["command"] == ["foldline", "policy", "--policy", "shop.policies:ChargeOnSend"]
    assert c["image"] == "registry/shop:1.2"  # the source aggregate's image by default
    env = env_of(c)
    assert env["FOLDLINE_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["FOLDLINE_KAFKA_SASL_PASSWORD"] == {"secretKeyRef": {"name": "kafka-auth", "key": "sasl.password"}}
    assert env["FOLDLINE_INSTANCE_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # Every variable the builder sets is one PolicySettings reads, with a value it accepts.
    plain = {k: v for k, v in env.items() if isinstance(v, str) and "KAFKA" not in k}
    settings = PolicySettings.from_env(plain)
    assert (str(settings.state_dir), settings.store, settings.http_port) == (
        builders.STATE_DIR,
        DEFAULT_STORE,
        builders.HTTP_PORT,
    )
    # The store's volume is the pod's own; probes on /healthz and /readyz; the CA mounted.
    assert {"name": "state", "emptyDir": {}} in pod["volumes"]
    assert {"name": "state", "mountPath": builders.STATE_DIR} in c["volumeMounts"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert any(v["name"] == "kafka-ca" for v in pod["volumes"])
    assert pod["serviceAccountName"] == "shop"
    assert pod["imagePullSecrets"] == [{"name": "pull"}]
    assert c["resources"]["requests"] == {"cpu": "50m", "memory": "192Mi"}


def test_suspend_scales_to_zero_and_own_image_wins() -> None:
    d = policy_deployment(OWNER, spec(suspend=True, image="other:2"), SOURCE, KafkaAuth())
    assert d["spec"]["replicas"] == 0
    c = builders.container_of(d)
    assert c["image"] == "other:2"
    assert "FOLDLINE_KAFKA_SASL_PASSWORD" not in env_of(c)
    assert policy_worker_name("x") == "x-policy"


def test_pdb_selects_the_worker() -> None:
    d = policy_deployment(OWNER, spec(), SOURCE, AUTH)
    budget = builders.pdb(OWNER, d)
    assert budget["spec"]["selector"]["matchLabels"] == d["spec"]["selector"]["matchLabels"]
    assert budget["metadata"]["name"] == "charges-policy"
