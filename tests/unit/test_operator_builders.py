"""The owned objects as plain dicts: what every pod gets, and what each kind of Deployment runs."""

from __future__ import annotations

from typing import Any

from foldline_operator import builders
from foldline_operator.builders import GatewayViews, KafkaAuth, Owner
from foldline_operator.spec import AggregateResource, ProjectionResource

OWNER = Owner("EventSourcedAggregate", "invoices", "uid-1", "shop")
SPEC = AggregateResource.parse(
    "invoices",
    {
        "aggregate": "shop.domain:Invoices",
        "image": "registry/shop:1.2",
        "partitions": 6,
        "kafka": {"bootstrapServers": "kafka:9092", "secretRef": {"name": "kafka-auth"}},
        "handlers": {
            "replicas": 3,
            "resources": {"requests": {"cpu": "250m"}},
            "storage": {"size": "5Gi", "storeKind": "rocksdb"},
        },
        "env": [{"name": "FOLDLINE_COMMIT_INTERVAL_MS", "value": "50"}],
        "serviceAccountName": "shop",
        "gateway": {"enabled": True, "replicas": 2, "tokenSecretRef": {"name": "gw"}},
    },
)
AUTH = KafkaAuth(
    "kafka-auth", frozenset({"security.protocol", "sasl.mechanism", "sasl.username", "sasl.password", "ca.crt"})
)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_handler_deployment() -> None:
    d = builders.handler_deployment(OWNER, SPEC, AUTH, replicas=3)
    assert d["metadata"]["name"] == "invoices-command-handler"
    assert d["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "foldline.io/v1alpha1",
            "kind": "EventSourcedAggregate",
            "name": "invoices",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert d["spec"]["replicas"] == 3
    assert d["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
    pod = d["spec"]["template"]["spec"]
    c = builders.container_of(d)
    assert c["command"] == ["foldline", "command-handler", "--aggregate", "shop.domain:Invoices"]
    assert c["image"] == "registry/shop:1.2" and c["resources"] == {"requests": {"cpu": "250m"}}
    env = env_of(c)
    assert env["FOLDLINE_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["FOLDLINE_KAFKA_SASL_PASSWORD"] == {"secretKeyRef": {"name": "kafka-auth", "key": "sasl.password"}}
    assert env["FOLDLINE_KAFKA_SSL_CA_LOCATION"] == "/etc/foldline/kafka/ca.crt"
    assert env["FOLDLINE_INSTANCE_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["FOLDLINE_STATE_DIR"] == builders.STATE_DIR and env["FOLDLINE_STORE"] == "rocksdb"
    assert env["FOLDLINE_HTTP_PORT"] == "8080" and env["FOLDLINE_COMMIT_INTERVAL_MS"] == "50"
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["serviceAccountName"] == "shop"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["state"] == {"name": "state", "emptyDir": {"sizeLimit": "5Gi"}}
    assert volumes["kafka-ca"]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts == {"tmp": "/tmp", "state": builders.STATE_DIR, "kafka-ca": "/etc/foldline/kafka"}


def test_without_a_secret_no_credentials_or_ca_appear() -> None:
    c = builders.container_of(builders.handler_deployment(OWNER, SPEC, KafkaAuth(), replicas=1))
    assert not {k for k in env_of(c) if "SASL" in k or "SSL" in k or "SECURITY" in k}
    assert "kafka-ca" not in {m["name"] for m in c["volumeMounts"]}


def test_gateway_deployment_service_and_views() -> None:
    views = GatewayViews(("shop.views:InvoiceList",), ("views-db", "url"))
    d = builders.gateway_deployment(OWNER, SPEC, AUTH, views)
    c = builders.container_of(d)
    assert c["command"] == [
        "foldline",
        "gateway",
        "--aggregate",
        "shop.domain:Invoices",
        "--projection",
        "shop.views:InvoiceList",
        "--database",
        "$(FOLDLINE_PROJECTION_DATABASE)",
    ]
    env = env_of(c)
    assert env["FOLDLINE_GATEWAY_TOKEN"] == {"secretKeyRef": {"name": "gw", "key": "token"}}
    assert env["FOLDLINE_GATEWAY_PORT"] == "8000" and d["spec"]["replicas"] == 2
    service = builders.gateway_service(OWNER, SPEC)
    assert service["spec"]["selector"] == d["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    bare = builders.container_of(builders.gateway_deployment(OWNER, SPEC, AUTH, GatewayViews()))
    assert "--database" not in bare["command"]


def test_projector_deployment_per_revision() -> None:
    projection = ProjectionResource.parse(
        "invoice-list",
        {
            "aggregateRef": {"name": "invoices"},
            "projector": "shop.views:InvoiceList",
            "revision": 3,
            "database": {"secretRef": {"name": "views-db"}},
            "replicas": 1,
        },
    )
    owner = Owner("Projection", "invoice-list", "uid-2", "shop")
    d = builders.projector_deployment(owner, projection, SPEC, KafkaAuth())
    assert d["metadata"]["name"] == "invoice-list-projector-r3"
    assert d["spec"]["selector"]["matchLabels"]["foldline.io/revision"] == "3"
    c = builders.container_of(d)
    assert c["command"] == [
        "foldline",
        "projector",
        "--projection",
        "shop.views:InvoiceList",
        "--aggregate-name",
        "invoices",
        "--view-name",
        "invoice-list",
    ]
    assert env_of(c)["FOLDLINE_PROJECTION_DATABASE"] == {"secretKeyRef": {"name": "views-db", "key": "url"}}
    assert c["image"] == "registry/shop:1.2"  # the aggregate's image unless it names its own
    assert d["spec"]["template"]["spec"]["serviceAccountName"] == "shop"


def test_pdb_selects_the_deployment_pods() -> None:
    d = builders.handler_deployment(OWNER, SPEC, AUTH, replicas=3)
    pdb = builders.pdb(OWNER, d)
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": d["spec"]["selector"]["matchLabels"]}}
    assert pdb["metadata"]["ownerReferences"] == d["metadata"]["ownerReferences"]


def test_every_workload_gets_kafka_credentials_only_as_secret_references() -> None:
    """Handler, gateway and projector: each credential is a secretKeyRef to the aggregate's Secret, the CA a
    mounted file; no env entry carries a Kafka setting's value except the bootstrap servers and the CA path."""
    projection = ProjectionResource.parse(
        "invoice-list",
        {"aggregateRef": {"name": "invoices"}, "projector": "shop.views:InvoiceList", "revision": 1,
         "database": {"secretRef": {"name": "views-db"}}},
    )  # fmt: skip
    deployments = [
        builders.handler_deployment(OWNER, SPEC, AUTH, replicas=1),
        builders.gateway_deployment(OWNER, SPEC, AUTH, GatewayViews()),
        builders.projector_deployment(Owner("Projection", "invoice-list", "u", "shop"), projection, SPEC, AUTH),
    ]
    for d in deployments:
        c = builders.container_of(d)
        kafka = {e["name"]: e for e in c["env"] if e["name"].startswith("FOLDLINE_KAFKA_")}
        for key, var in builders.KAFKA_SECRET_ENV.items():
            assert kafka[var] == {"name": var, "valueFrom": {"secretKeyRef": {"name": "kafka-auth", "key": key}}}
        assert set(kafka) == {*builders.KAFKA_SECRET_ENV.values(), "FOLDLINE_KAFKA_BOOTSTRAP",
                              "FOLDLINE_KAFKA_SSL_CA_LOCATION"}  # fmt: skip
        assert kafka["FOLDLINE_KAFKA_SSL_CA_LOCATION"]["value"] == f"{builders.KAFKA_CA_DIR}/ca.crt"
        volumes = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
        assert volumes["kafka-ca"]["secret"]["secretName"] == "kafka-auth"
        assert {"name": "kafka-ca", "mountPath": builders.KAFKA_CA_DIR, "readOnly": True} in c["volumeMounts"]
