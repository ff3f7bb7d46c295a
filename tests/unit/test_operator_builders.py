"""The owned objects as plain dicts: what every pod gets, and what each kind of workload runs."""

from __future__ import annotations

from typing import Any

import pytest

from foldline.settings import HandlerSettings
from foldline_operator import builders, pods, schemas
from foldline_operator.builders import GatewayViews, KafkaAuth, Owner
from foldline_operator.spec import DEFAULT_STORE, AggregateResource, ProjectionResource

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


def test_handler_statefulset() -> None:
    d = builders.handler_statefulset(OWNER, SPEC, AUTH, replicas=3)
    assert (d["kind"], d["metadata"]["name"]) == ("StatefulSet", "invoices-command-handler")
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
    assert c["image"] == "registry/shop:1.2"
    assert c["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"}}  # the default fills the gap
    env = env_of(c)
    assert env["FOLDLINE_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["FOLDLINE_KAFKA_SASL_PASSWORD"] == {"secretKeyRef": {"name": "kafka-auth", "key": "sasl.password"}}
    assert env["FOLDLINE_KAFKA_SSL_CA_LOCATION"] == "/etc/foldline/kafka/ca.crt"
    # The pod's name, <statefulset>-<ordinal>, is stable: so are the transactional id and group.instance.id.
    assert env["FOLDLINE_INSTANCE_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["FOLDLINE_STATIC_MEMBERSHIP"] == "true"
    assert env["FOLDLINE_STATE_DIR"] == builders.STATE_DIR and env["FOLDLINE_STORE"] == "rocksdb"
    assert env["FOLDLINE_HTTP_PORT"] == "8080" and env["FOLDLINE_COMMIT_INTERVAL_MS"] == "50"
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["serviceAccountName"] == "shop"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "state" not in volumes  # a claim per pod instead
    [claim] = d["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state"
    assert claim["metadata"]["labels"] == d["spec"]["selector"]["matchLabels"]  # nothing that could ever change
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}}
    assert d["spec"]["serviceName"] == "invoices-command-handler"
    assert d["spec"]["podManagementPolicy"] == "Parallel"
    assert d["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Delete", "whenScaled": "Retain"}
    assert volumes["kafka-ca"]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts == {"tmp": "/tmp", "state": builders.STATE_DIR, "kafka-ca": "/etc/foldline/kafka"}


def test_without_a_secret_no_credentials_or_ca_appear() -> None:
    c = builders.container_of(builders.handler_statefulset(OWNER, SPEC, KafkaAuth(), replicas=1))
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


def test_pdb_selects_the_workload_pods() -> None:
    d = builders.handler_statefulset(OWNER, SPEC, AUTH, replicas=3)
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
        builders.handler_statefulset(OWNER, SPEC, AUTH, 1),
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


def aggregate(**overrides: Any) -> AggregateResource:
    spec: dict[str, Any] = {
        "aggregate": "shop.domain:Invoices",
        "image": "registry:5000/shop:1.2",
        "partitions": 6,
        "kafka": {"bootstrapServers": "kafka:9092"},
    }
    spec.update(overrides)
    return AggregateResource.parse("invoices", spec)


def test_storage_class_and_the_explicit_emptydir() -> None:
    classed = builders.handler_statefulset(
        OWNER, aggregate(handlers={"storage": {"storageClassName": "fast-ssd", "size": "3Gi"}}), KafkaAuth(), 1
    )
    assert classed["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast-ssd"
    ephemeral = builders.handler_statefulset(
        OWNER, aggregate(handlers={"storage": {"volume": "emptyDir", "size": "3Gi"}}), KafkaAuth(), 1
    )
    assert "volumeClaimTemplates" not in ephemeral["spec"]
    volumes = {v["name"]: v for v in ephemeral["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"] == {"name": "state", "emptyDir": {"sizeLimit": "3Gi"}}
    assert ephemeral["kind"] == "StatefulSet"  # stable instance ids either way


def test_handler_service_is_headless_and_selects_the_pods() -> None:
    service = builders.handler_service(OWNER, SPEC)
    sts = builders.handler_statefulset(OWNER, SPEC, AUTH, 1)
    assert service["metadata"]["name"] == sts["spec"]["serviceName"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]


def test_one_default_store_everywhere() -> None:
    """The CRD's default, the operator's and the runtime's are one store."""
    storage = schemas.aggregate_schema()["properties"]["spec"]["properties"]["handlers"]["properties"]["storage"]
    assert storage["properties"]["storeKind"]["default"] == DEFAULT_STORE == HandlerSettings().store == "rocksdb"
    assert aggregate().storage.store_kind == DEFAULT_STORE


def test_recommended_labels_and_default_requests() -> None:
    sts = builders.handler_statefulset(OWNER, aggregate(), KafkaAuth(), 1)
    expected = {
        "app.kubernetes.io/name": "foldline",
        "app.kubernetes.io/instance": "invoices",
        "app.kubernetes.io/component": "command-handler",
        "app.kubernetes.io/part-of": "foldline",
        "app.kubernetes.io/version": "1.2",
        "app.kubernetes.io/managed-by": "foldline-operator",
    }
    assert expected.items() <= sts["metadata"]["labels"].items()
    assert expected.items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    assert "app.kubernetes.io/version" not in sts["spec"]["selector"]["matchLabels"]  # selectors never change
    assert builders.container_of(sts)["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"}}
    # A limit alone is the request already; a given request is kept.
    limited = aggregate(handlers={"resources": {"limits": {"memory": "1Gi"}, "requests": {"cpu": "2"}}})
    resources = builders.container_of(builders.handler_statefulset(OWNER, limited, KafkaAuth(), 1))["resources"]
    assert resources == {"limits": {"memory": "1Gi"}, "requests": {"cpu": "2"}}
    gateway = builders.gateway_deployment(OWNER, aggregate(gateway={"enabled": True}), KafkaAuth(), GatewayViews())
    assert builders.container_of(gateway)["resources"]["requests"] == {"cpu": "50m", "memory": "128Mi"}


@pytest.mark.parametrize(
    ("image", "version"),
    [("shop:1.2", "1.2"), ("registry:5000/shop", None), ("shop@sha256:abc", None), ("shop:v1+build", None)],
)
def test_version_label_from_the_image_tag(image: str, version: str | None) -> None:
    assert pods.labels("x", "gateway", "x", pods.version_of(image)).get("app.kubernetes.io/version") == version


def test_handlers_spread_by_default() -> None:
    pod = builders.handler_statefulset(OWNER, aggregate(), KafkaAuth(), 1)["spec"]["template"]["spec"]
    match = builders.selector("invoices", "command-handler")
    [preferred] = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred["podAffinityTerm"] == {
        "labelSelector": {"matchLabels": match},
        "topologyKey": "kubernetes.io/hostname",
    }
    [spread] = pod["topologySpreadConstraints"]
    assert (spread["topologyKey"], spread["whenUnsatisfiable"]) == ("topology.kubernetes.io/zone", "ScheduleAnyway")
    gateway = builders.gateway_deployment(OWNER, aggregate(), KafkaAuth(), GatewayViews())["spec"]["template"]["spec"]
    assert "affinity" not in gateway and "topologySpreadConstraints" not in gateway


POD_TEMPLATE: dict[str, Any] = {
    "metadata": {
        "labels": {"team": "billing", "app.kubernetes.io/component": "mine"},
        "annotations": {"sidecar.istio.io/inject": "false", "prometheus.io/port": "9999"},
    },
    "spec": {
        "nodeSelector": {"pool": "stateful"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "kafka", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
        "topologySpreadConstraints": [
            {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}
        ],
        "priorityClassName": "business-critical",
        "env": [
            {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
            {"name": "FOLDLINE_COMMIT_INTERVAL_MS", "value": "20"},
        ],
        "volumes": [{"name": "extra", "configMap": {"name": "tuning"}}],
        "volumeMounts": [{"name": "extra", "mountPath": "/etc/tuning", "readOnly": True}],
    },
}


def test_pod_template_places_and_decorates_the_pods() -> None:
    spec = aggregate(podTemplate=POD_TEMPLATE, env=[{"name": "FOLDLINE_COMMIT_INTERVAL_MS", "value": "50"}])
    sts = builders.handler_statefulset(OWNER, spec, KafkaAuth(), 1)
    meta, pod = sts["spec"]["template"]["metadata"], sts["spec"]["template"]["spec"]
    assert meta["labels"]["team"] == "billing"
    assert meta["labels"]["app.kubernetes.io/component"] == "command-handler"  # the selector's labels win
    assert (
        meta["annotations"]["sidecar.istio.io/inject"] == "false"
        and meta["annotations"]["prometheus.io/port"] == "9999"
    )
    assert pod["nodeSelector"] == {"pool": "stateful"} and pod["priorityClassName"] == "business-critical"
    assert pod["tolerations"] == POD_TEMPLATE["spec"]["tolerations"]
    assert pod["affinity"] == POD_TEMPLATE["spec"]["affinity"]  # replaces the default
    assert pod["topologySpreadConstraints"] == POD_TEMPLATE["spec"]["topologySpreadConstraints"]
    assert {"name": "extra", "configMap": {"name": "tuning"}} in pod["volumes"]
    c = builders.container_of(sts)
    assert {"name": "extra", "mountPath": "/etc/tuning", "readOnly": True} in c["volumeMounts"]
    env = env_of(c)
    assert env["DB_PASSWORD"] == {"secretKeyRef": {"name": "db", "key": "password"}}
    assert env["FOLDLINE_COMMIT_INTERVAL_MS"] == "20"  # the podTemplate's env comes last
    assert len(c["env"]) == len(env)  # one entry per name: the API treats env as a map


def test_projectors_take_the_aggregate_pod_template_unless_they_have_their_own() -> None:
    parent = aggregate(podTemplate=POD_TEMPLATE)
    raw = {"aggregateRef": {"name": "invoices"}, "projector": "shop.views:L", "database": {"secretRef": {"name": "db"}}}
    owner = Owner("Projection", "l", "uid-3", "shop")
    inherited = builders.projector_deployment(owner, ProjectionResource.parse("l", raw), parent, KafkaAuth())
    assert inherited["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "stateful"}
    own = {**raw, "podTemplate": {"spec": {"nodeSelector": {"pool": "cheap"}}}, "suspend": True}
    d = builders.projector_deployment(owner, ProjectionResource.parse("l", own), parent, KafkaAuth())
    assert d["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "cheap"}
    assert d["spec"]["replicas"] == 0  # suspended
