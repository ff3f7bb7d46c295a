"""The objects the operator owns, built as plain dicts from a spec: no API calls, unit-tested as is.

Every pod runs the one foldline image and CLI (``foldline command-handler|projector|gateway``), non-root
with a read-only root filesystem; writable paths are emptyDir volumes. Kafka credentials come from the
aggregate's Secret through ``secretKeyRef`` (values never appear in a Deployment).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from foldline_operator.crds import API_VERSION
from foldline_operator.spec import AggregateResource, PodOptions, ProjectionResource

Obj = dict[str, Any]

STATE_DIR = "/var/lib/foldline/state"
KAFKA_CA_DIR = "/etc/foldline/kafka"
HTTP_PORT = 8080
GATEWAY_PORT = 8000
RUN_AS = 10001
MANAGED_BY = "foldline-operator"

#: Keys of the Kafka Secret (librdkafka's own names) and the variables foldline's settings read.
KAFKA_SECRET_ENV = {
    "security.protocol": "FOLDLINE_KAFKA_SECURITY_PROTOCOL",
    "sasl.mechanism": "FOLDLINE_KAFKA_SASL_MECHANISM",
    "sasl.username": "FOLDLINE_KAFKA_SASL_USERNAME",
    "sasl.password": "FOLDLINE_KAFKA_SASL_PASSWORD",
}
KAFKA_CA_KEY = "ca.crt"
#: The projection database URL (from the Projection's Secret); ``foldline projector`` reads it.
DATABASE_ENV = "FOLDLINE_PROJECTION_DATABASE"


@dataclass(frozen=True)
class KafkaAuth:
    """Which keys the aggregate's Kafka Secret has (the operator reads it; pods get references)."""

    secret: str = ""
    keys: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Owner:
    kind: str
    name: str
    uid: str
    namespace: str

    def reference(self) -> Obj:
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def labels(instance: str, component: str, aggregate: str, **extra: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "foldline",
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "foldline.io/aggregate": aggregate,
        **extra,
    }


def selector(instance: str, component: str, **extra: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "foldline",
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
        **extra,
    }


def selector_string(match: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in match.items())


def handler_name(esa: str) -> str:
    return f"{esa}-command-handler"


def gateway_name(esa: str) -> str:
    return f"{esa}-gateway"


def projector_name(projection: str, revision: int) -> str:
    return f"{projection}-projector-r{revision}"


def _meta(name: str, owner: Owner, object_labels: Mapping[str, str]) -> Obj:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": dict(object_labels),
        "ownerReferences": [owner.reference()],
    }


def kafka_env(spec: AggregateResource, auth: KafkaAuth) -> list[Obj]:
    env: list[Obj] = [{"name": "FOLDLINE_KAFKA_BOOTSTRAP", "value": spec.kafka_bootstrap}]
    for key, var in KAFKA_SECRET_ENV.items():
        if key in auth.keys:
            env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": auth.secret, "key": key}}})
    if KAFKA_CA_KEY in auth.keys:
        env.append({"name": "FOLDLINE_KAFKA_SSL_CA_LOCATION", "value": f"{KAFKA_CA_DIR}/{KAFKA_CA_KEY}"})
    return env


def _kafka_volume(auth: KafkaAuth) -> tuple[list[Obj], list[Obj]]:
    if KAFKA_CA_KEY not in auth.keys:
        return [], []
    volume = {
        "name": "kafka-ca",
        "secret": {"secretName": auth.secret, "items": [{"key": KAFKA_CA_KEY, "path": KAFKA_CA_KEY}]},
    }
    return [volume], [{"name": "kafka-ca", "mountPath": KAFKA_CA_DIR, "readOnly": True}]


def _probe(path: str, port: str, period: int, failures: int) -> Obj:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _container(
    name: str,
    pod: PodOptions,
    command: list[str],
    env: list[Obj],
    port: int,
    resources: Mapping[str, Any],
    mounts: list[Obj],
) -> Obj:
    container: Obj = {
        "name": name,
        "image": pod.image,
        "imagePullPolicy": pod.image_pull_policy,
        "command": command,
        "env": env + [{"name": k, "value": v} for k, v in pod.env],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        # Liveness says the loop still turns; readiness waits for restored stores. A restore may be long:
        # the startup probe gives it up to 10 minutes before liveness counts.
        "startupProbe": _probe("/healthz", "http", 5, 120),
        "livenessProbe": _probe("/healthz", "http", 10, 3),
        "readinessProbe": _probe("/readyz", "http", 5, 3),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *mounts],
    }
    if resources:
        container["resources"] = dict(resources)
    return container


def _pod_spec(pod: PodOptions, container: Obj, volumes: list[Obj], grace: int) -> Obj:
    spec: Obj = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": grace,
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}, *volumes],
    }
    if pod.service_account:
        spec["serviceAccountName"] = pod.service_account
    if pod.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in pod.image_pull_secrets]
    return spec


def _deployment(
    name: str,
    owner: Owner,
    object_labels: Mapping[str, str],
    match: Mapping[str, str],
    replicas: int,
    pod_spec: Obj,
    port: int,
) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, owner, object_labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(match)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": dict(object_labels),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(port),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def handler_deployment(owner: Owner, spec: AggregateResource, auth: KafkaAuth, replicas: int) -> Obj:
    """``foldline command-handler``: one pod per share of the partitions, its store on an emptyDir."""
    name = handler_name(owner.name)
    env = [
        *kafka_env(spec, auth),
        {"name": "FOLDLINE_STATE_DIR", "value": STATE_DIR},
        {"name": "FOLDLINE_STORE", "value": spec.store_kind},
        {"name": "FOLDLINE_HTTP_PORT", "value": str(HTTP_PORT)},
        {"name": "FOLDLINE_INSTANCE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "FOLDLINE_LOG_FORMAT", "value": "json"},
    ]
    ca_volumes, ca_mounts = _kafka_volume(auth)
    container = _container(
        "command-handler",
        spec.pod,
        ["foldline", "command-handler", "--aggregate", spec.aggregate_path],
        env,
        HTTP_PORT,
        spec.resources,
        [{"name": "state", "mountPath": STATE_DIR}, *ca_mounts],
    )
    volumes = [{"name": "state", "emptyDir": {"sizeLimit": spec.storage_size}}, *ca_volumes]
    object_labels = labels(owner.name, "command-handler", spec.name)
    return _deployment(
        name,
        owner,
        object_labels,
        selector(owner.name, "command-handler"),
        replicas,
        _pod_spec(spec.pod, container, volumes, grace=60),
        HTTP_PORT,
    )


@dataclass(frozen=True)
class GatewayViews:
    """The projections the gateway serves, all from one database (the first projection's Secret)."""

    projections: tuple[str, ...] = ()
    database: tuple[str, str] | None = None  # (secret, key)


def gateway_deployment(owner: Owner, spec: AggregateResource, auth: KafkaAuth, views: GatewayViews) -> Obj:
    command = ["foldline", "gateway", "--aggregate", spec.aggregate_path]
    env = [
        *kafka_env(spec, auth),
        {"name": "FOLDLINE_GATEWAY_PORT", "value": str(GATEWAY_PORT)},
        {"name": "FOLDLINE_LOG_FORMAT", "value": "json"},
    ]
    if spec.gateway_token is not None:
        env.append(
            {
                "name": "FOLDLINE_GATEWAY_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": spec.gateway_token.name, "key": spec.gateway_token.key}},
            }
        )
    if views.database is not None and views.projections:
        for path in views.projections:
            command += ["--projection", path]
        env.append(_database_env(*views.database))
        command += ["--database", f"$({DATABASE_ENV})"]  # expanded by the kubelet from the env
    ca_volumes, ca_mounts = _kafka_volume(auth)
    container = _container("gateway", spec.pod, command, env, GATEWAY_PORT, spec.gateway_resources, ca_mounts)
    object_labels = labels(owner.name, "gateway", spec.name)
    return _deployment(
        gateway_name(owner.name),
        owner,
        object_labels,
        selector(owner.name, "gateway"),
        spec.gateway_replicas,
        _pod_spec(spec.pod, container, ca_volumes, grace=30),
        GATEWAY_PORT,
    )


def gateway_service(owner: Owner, spec: AggregateResource) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(gateway_name(owner.name), owner, labels(owner.name, "gateway", spec.name)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(owner.name, "gateway"),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _database_env(secret: str, key: str) -> Obj:
    return {"name": DATABASE_ENV, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def projector_deployment(owner: Owner, spec: ProjectionResource, aggregate: AggregateResource, auth: KafkaAuth) -> Obj:
    """One Deployment per revision: a bump starts a new one beside the old, which keeps serving.

    The projector registers the revision its Projection class declares; ``spec.revision`` must match it.
    """
    revision = str(spec.revision)
    pod = spec.pod(aggregate)
    command = [
        "foldline",
        "projector",
        "--projection",
        spec.projector_path,
        "--aggregate-name",
        aggregate.name,
        "--view-name",
        spec.view,
    ]
    env = [
        *kafka_env(aggregate, auth),
        _database_env(spec.database.name, spec.database.key),
        {"name": "FOLDLINE_HTTP_PORT", "value": str(HTTP_PORT)},
        {"name": "FOLDLINE_INSTANCE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "FOLDLINE_LOG_FORMAT", "value": "json"},
    ]
    ca_volumes, ca_mounts = _kafka_volume(auth)
    container = _container("projector", pod, command, env, HTTP_PORT, spec.resources, ca_mounts)
    extra = {"foldline.io/projection": owner.name, "foldline.io/revision": revision}
    object_labels = labels(owner.name, "projector", aggregate.name, **extra)
    return _deployment(
        projector_name(owner.name, spec.revision),
        owner,
        object_labels,
        selector(owner.name, "projector", **{"foldline.io/revision": revision}),
        spec.replicas,
        _pod_spec(pod, container, ca_volumes, grace=30),
        HTTP_PORT,
    )


def pdb(owner: Owner, deployment: Obj) -> Obj:
    """At most one pod of a Deployment voluntarily disrupted at a time (drains, node upgrades)."""
    meta = deployment["metadata"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(meta["name"], owner, meta["labels"]),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}},
    }


def container_of(deployment: Obj) -> Obj:
    containers: Sequence[Obj] = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0]
