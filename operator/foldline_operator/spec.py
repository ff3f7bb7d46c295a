"""The custom resources' specs as frozen dataclasses, with the CRD's defaults applied again.

The API server already defaults and validates; parsing here keeps the rest of the operator free of
``dict.get`` chains and lets unit tests build a spec by hand.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from foldline.topics import DAY_MS, Retention

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": DAY_MS}


def duration_ms(text: str) -> int:
    """``90m`` → 5400000; the CRD's pattern only lets these through."""
    match = re.fullmatch(r"([0-9]+)(ms|s|m|h|d)", text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 500ms, 30s, 90m, 12h, 7d)")
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str = ""

    @classmethod
    def parse(cls, raw: Any, default_key: str = "") -> SecretRef | None:
        raw = _dict(raw)
        if not raw.get("name"):
            return None
        return cls(str(raw["name"]), str(raw.get("key") or default_key))


def _env_list(raw: Any) -> tuple[Mapping[str, Any], ...]:
    """EnvVar objects as the Pod API has them (``value`` or ``valueFrom``)."""
    out = []
    for e in raw or ():
        if not isinstance(e, Mapping) or not e.get("name"):
            continue
        var: dict[str, Any] = {"name": str(e["name"])}
        if "valueFrom" in e:
            var["valueFrom"] = dict(_dict(e["valueFrom"]))
        else:
            var["value"] = str(e.get("value", ""))
        out.append(var)
    return tuple(out)


def _objects(raw: Any) -> tuple[Mapping[str, Any], ...]:
    return tuple(dict(item) for item in raw or () if isinstance(item, Mapping))


def _strings(raw: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in _dict(raw).items()}


@dataclass(frozen=True)
class PodTemplate:
    """``spec.podTemplate``: what a platform team sets to place and decorate pods (all optional)."""

    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] = field(default_factory=dict)
    topology_spread: tuple[Mapping[str, Any], ...] = ()
    priority_class: str = ""
    env: tuple[Mapping[str, Any], ...] = ()
    volumes: tuple[Mapping[str, Any], ...] = ()
    volume_mounts: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def parse(cls, raw: Any) -> PodTemplate | None:
        if not isinstance(raw, Mapping):
            return None
        meta, spec = _dict(raw.get("metadata")), _dict(raw.get("spec"))
        return cls(
            labels=_strings(meta.get("labels")),
            annotations=_strings(meta.get("annotations")),
            node_selector=_strings(spec.get("nodeSelector")),
            tolerations=_objects(spec.get("tolerations")),
            affinity=dict(_dict(spec.get("affinity"))),
            topology_spread=_objects(spec.get("topologySpreadConstraints")),
            priority_class=str(spec.get("priorityClassName") or ""),
            env=_env_list(spec.get("env")),
            volumes=_objects(spec.get("volumes")),
            volume_mounts=_objects(spec.get("volumeMounts")),
        )


@dataclass(frozen=True)
class PodOptions:
    """What every foldline pod of one resource shares."""

    image: str
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    service_account: str = ""
    env: tuple[Mapping[str, Any], ...] = ()
    template: PodTemplate | None = None

    @classmethod
    def parse(cls, spec: Mapping[str, Any], image: str) -> PodOptions:
        return cls(
            image=image,
            image_pull_policy=str(spec.get("imagePullPolicy") or "IfNotPresent"),
            image_pull_secrets=tuple(str(s["name"]) for s in spec.get("imagePullSecrets") or () if s.get("name")),
            service_account=str(spec.get("serviceAccountName") or ""),
            env=_env_list(spec.get("env")),
            template=PodTemplate.parse(spec.get("podTemplate")),
        )


@dataclass(frozen=True)
class Autoscaling:
    max_replicas: int
    min_replicas: int = 1
    lag_per_replica: int = 1000
    cooldown_seconds: int = 300

    @classmethod
    def parse(cls, raw: Any) -> Autoscaling | None:
        raw = _dict(raw)
        if "maxReplicas" not in raw:
            return None
        return cls(
            max_replicas=int(raw["maxReplicas"]),
            min_replicas=int(raw.get("minReplicas", 1)),
            lag_per_replica=int(raw.get("lagPerReplica", 1000)),
            cooldown_seconds=int(raw.get("cooldownSeconds", 300)),
        )


#: The state store the handlers use unless the resource names another: the one the benchmarks chose, and
#: ``foldline.settings.HandlerSettings``' default (a unit test keeps the two and the CRD equal).
DEFAULT_STORE = "rocksdb"


@dataclass(frozen=True)
class Storage:
    """Each handler pod's local store: on a PersistentVolumeClaim of its own (kept across restarts and
    rolling updates, so only the changelog's tail is restored) or, chosen explicitly, an emptyDir."""

    volume: str = "persistentVolumeClaim"
    size: str = "1Gi"
    storage_class: str | None = None  # None: the cluster's default StorageClass
    store_kind: str = DEFAULT_STORE

    @property
    def persistent(self) -> bool:
        return self.volume != "emptyDir"


@dataclass(frozen=True)
class AggregateResource:
    """An EventSourcedAggregate's spec; ``name`` is the aggregate's name, the prefix of its topics."""

    name: str
    aggregate_path: str
    pod: PodOptions
    partitions: int
    kafka_bootstrap: str
    replication_factor: int = 3
    allow_partition_growth: bool = False
    retention: Retention = field(default_factory=Retention)
    kafka_secret: SecretRef | None = None
    replicas: int = 1
    autoscaling: Autoscaling | None = None
    #: Warm standby copies of each partition's store kept by other handler pods (FOLDLINE_STANDBY_REPLICAS).
    standby_replicas: int = 0
    resources: Mapping[str, Any] = field(default_factory=dict)
    storage: Storage = field(default_factory=Storage)
    gateway_enabled: bool = False
    gateway_replicas: int = 1
    gateway_token: SecretRef | None = None
    gateway_resources: Mapping[str, Any] = field(default_factory=dict)
    deletion_policy: str = "Retain"
    suspend: bool = False

    @classmethod
    def parse(cls, resource_name: str, spec: Mapping[str, Any]) -> AggregateResource:
        retention = _dict(spec.get("retention"))
        handlers = _dict(spec.get("handlers"))
        storage = _dict(handlers.get("storage"))
        gateway = _dict(spec.get("gateway"))
        kafka = _dict(spec.get("kafka"))
        return cls(
            name=str(spec.get("aggregateName") or resource_name),
            aggregate_path=str(spec["aggregate"]),
            pod=PodOptions.parse(spec, str(spec["image"])),
            partitions=int(spec["partitions"]),
            kafka_bootstrap=str(kafka["bootstrapServers"]),
            replication_factor=int(spec.get("replicationFactor", 3)),
            allow_partition_growth=bool(spec.get("allowPartitionGrowth", False)),
            retention=Retention(
                commands_ms=duration_ms(retention.get("commands", "7d")),
                results_ms=duration_ms(retention.get("results", "1h")),
                dead_letters_ms=duration_ms(retention.get("deadLetters", "30d")),
            ),
            kafka_secret=SecretRef.parse(kafka.get("secretRef")),
            replicas=int(handlers.get("replicas", 1)),
            autoscaling=Autoscaling.parse(handlers.get("autoscaling")),
            standby_replicas=int(handlers.get("standbyReplicas", 0)),
            resources=dict(_dict(handlers.get("resources"))),
            storage=Storage(
                volume=str(storage.get("volume", "persistentVolumeClaim")),
                size=str(storage.get("size", "1Gi")),
                storage_class=storage.get("storageClassName"),
                store_kind=str(storage.get("storeKind", DEFAULT_STORE)),
            ),
            gateway_enabled=bool(gateway.get("enabled", False)),
            gateway_replicas=int(gateway.get("replicas", 1)),
            gateway_token=SecretRef.parse(gateway.get("tokenSecretRef"), "token"),
            gateway_resources=dict(_dict(gateway.get("resources"))),
            deletion_policy=str(spec.get("deletionPolicy", "Retain")),
            suspend=bool(spec.get("suspend", False)),
        )


@dataclass(frozen=True)
class ProjectionResource:
    view: str
    aggregate_ref: str
    projector_path: str
    database: SecretRef
    source: str = "snapshots"
    image: str = ""
    pod_spec: Mapping[str, Any] = field(default_factory=dict)
    replicas: int = 1
    revision: int = 1
    resources: Mapping[str, Any] = field(default_factory=dict)
    suspend: bool = False

    @classmethod
    def parse(cls, resource_name: str, spec: Mapping[str, Any]) -> ProjectionResource:
        database = SecretRef.parse(_dict(spec.get("database")).get("secretRef"), "url")
        if database is None:
            raise ValueError("spec.database.secretRef.name is required")
        return cls(
            view=str(spec.get("view") or resource_name),
            aggregate_ref=str(_dict(spec.get("aggregateRef"))["name"]),
            projector_path=str(spec["projector"]),
            database=database,
            source=str(spec.get("source", "snapshots")),
            image=str(spec.get("image") or ""),
            pod_spec=dict(spec),
            replicas=int(spec.get("replicas", 1)),
            revision=int(spec.get("revision", 1)),
            resources=dict(_dict(spec.get("resources"))),
            suspend=bool(spec.get("suspend", False)),
        )

    def pod(self, aggregate: AggregateResource) -> PodOptions:
        """The projector's pod options: its own where given, else the aggregate's (env is its own; the
        podTemplate is the aggregate's when the Projection has none, so one placement covers both)."""
        own = PodOptions.parse(self.pod_spec, self.image or aggregate.pod.image)
        return replace(
            own,
            image_pull_secrets=own.image_pull_secrets or aggregate.pod.image_pull_secrets,
            service_account=own.service_account or aggregate.pod.service_account,
            template=own.template or aggregate.pod.template,
        )
