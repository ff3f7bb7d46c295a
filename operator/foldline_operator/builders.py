"""The objects the operator owns, built as plain dicts from a spec: no API calls, unit-tested as is.

Every pod runs the one foldline image and CLI (``foldline command-handler|projector|gateway``), non-root
with a read-only root filesystem. Command handlers are a StatefulSet: each pod keeps its stores on a
PersistentVolumeClaim of its own (or, chosen explicitly, an emptyDir) and has a stable name, which is its
instance id, so its transactional id and its static group membership survive restarts. Gateways and
projectors keep no state and are Deployments. Kafka credentials come from the aggregate's Secret through
``secretKeyRef`` (values never appear in a workload).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from foldline_operator.crds import API_VERSION
from foldline_operator.pods import (
    container,
    pod_spec,
    resources_with_defaults,
    template_metadata,
    version_of,
)
from foldline_operator.pods import labels as labels
from foldline_operator.pods import selector as selector
from foldline_operator.spec import AggregateResource, ProjectionResource

Obj = dict[str, Any]

STATE_DIR = "/var/lib/foldline/state"
KAFKA_CA_DIR = "/etc/foldline/kafka"
HTTP_PORT = 8080
GATEWAY_PORT = 8000

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


def _deployment(
    name: str,
    owner: Owner,
    object_labels: Mapping[str, str],
    match: Mapping[str, str],
    replicas: int,
    metadata: Obj,
    spec: Obj,
) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, owner, object_labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(match)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": metadata, "spec": spec},
        },
    }


#: The handler pods' store volume: a claim per pod from the StatefulSet's template.
STATE_VOLUME = "state"


def handler_statefulset(owner: Owner, spec: AggregateResource, auth: KafkaAuth, replicas: int) -> Obj:
    """``foldline command-handler``: one pod per share of the partitions, named ``<name>-<ordinal>``.

    The pod name is the instance id: the transactional id (``foldline.<agg>.<pod>``) and the static group
    membership (``group.instance.id``) stay the pod's across restarts, so a restarted pod fences its
    predecessor at once and gets its partitions back without a rebalance, its store (on its claim) restored
    only from its changelog offset. Pods start and stop in parallel (no ordering is needed); claims are kept
    when scaling down (a scale-up finds them) and deleted with the StatefulSet (they only cache the
    snapshots topic).
    """
    name = handler_name(owner.name)
    storage = spec.storage
    env = [
        *kafka_env(spec, auth),
        {"name": "FOLDLINE_STATE_DIR", "value": STATE_DIR},
        {"name": "FOLDLINE_STORE", "value": storage.store_kind},
        {"name": "FOLDLINE_HTTP_PORT", "value": str(HTTP_PORT)},
        {"name": "FOLDLINE_INSTANCE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "FOLDLINE_STATIC_MEMBERSHIP", "value": "true"},
        {"name": "FOLDLINE_LOG_FORMAT", "value": "json"},
    ]
    if spec.standby_replicas:  # unset when 0: existing StatefulSets see no change and roll no pod
        env.append({"name": "FOLDLINE_STANDBY_REPLICAS", "value": str(spec.standby_replicas)})
    ca_volumes, ca_mounts = _kafka_volume(auth)
    main = container(
        "command-handler",
        spec.pod,
        ["foldline", "command-handler", "--aggregate", spec.aggregate_path],
        env,
        HTTP_PORT,
        resources_with_defaults("command-handler", spec.resources),
        [{"name": STATE_VOLUME, "mountPath": STATE_DIR}, *ca_mounts],
    )
    match = selector(owner.name, "command-handler")
    volumes = list(ca_volumes)
    claims: list[Obj] = []
    if storage.persistent:
        claim_spec: Obj = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage.size}}}
        if storage.storage_class is not None:
            claim_spec["storageClassName"] = storage.storage_class
        # Only the selector's labels: a claim template can never change (an image tag in it would).
        claims.append({"metadata": {"name": STATE_VOLUME, "labels": dict(match)}, "spec": claim_spec})
    else:
        volumes.insert(0, {"name": STATE_VOLUME, "emptyDir": {"sizeLimit": storage.size}})
    object_labels = labels(owner.name, "command-handler", spec.name, version_of(spec.pod.image))
    body: Obj = {
        "serviceName": name,
        "replicas": replicas,
        "selector": {"matchLabels": match},
        "podManagementPolicy": "Parallel",
        "updateStrategy": {"type": "RollingUpdate"},
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"},
        "template": {
            "metadata": template_metadata(spec.pod, object_labels, HTTP_PORT),
            "spec": pod_spec(spec.pod, main, volumes, grace=60, spread=match),
        },
    }
    if claims:
        body["volumeClaimTemplates"] = claims
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(name, owner, object_labels),
        "spec": body,
    }


def handler_service(owner: Owner, spec: AggregateResource) -> Obj:
    """The StatefulSet's governing Service: headless, so each pod has a stable DNS name."""
    name = handler_name(owner.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, owner, labels(owner.name, "command-handler", spec.name)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector(owner.name, "command-handler"),
            "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


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
    resources = resources_with_defaults("gateway", spec.gateway_resources)
    main = container("gateway", spec.pod, command, env, GATEWAY_PORT, resources, ca_mounts)
    object_labels = labels(owner.name, "gateway", spec.name, version_of(spec.pod.image))
    return _deployment(
        gateway_name(owner.name),
        owner,
        object_labels,
        selector(owner.name, "gateway"),
        spec.gateway_replicas,
        template_metadata(spec.pod, object_labels, GATEWAY_PORT),
        pod_spec(spec.pod, main, ca_volumes, grace=30, spread=None),
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
    main = container(
        "projector", pod, command, env, HTTP_PORT, resources_with_defaults("projector", spec.resources), ca_mounts
    )
    extra = {"foldline.io/projection": owner.name, "foldline.io/revision": revision}
    object_labels = labels(owner.name, "projector", aggregate.name, version_of(pod.image), **extra)
    return _deployment(
        projector_name(owner.name, spec.revision),
        owner,
        object_labels,
        selector(owner.name, "projector", **{"foldline.io/revision": revision}),
        0 if spec.suspend else spec.replicas,
        template_metadata(pod, object_labels, HTTP_PORT),
        pod_spec(pod, main, ca_volumes, grace=30, spread=None),
    )


def pdb(owner: Owner, deployment: Obj) -> Obj:
    """At most one pod of a workload voluntarily disrupted at a time (drains, node upgrades)."""
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
