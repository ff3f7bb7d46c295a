"""Pod templates of every owned workload: labels, the container, defaults, and the resource's podTemplate.

The operator's own parts (selector labels, probes, security context, its env and volumes) always win over
``spec.podTemplate``, so a platform team can place and decorate pods but never break what keeps them
correct; everything else the podTemplate gives is added (its env last, so it may override foldline's
tuning variables).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from foldline_operator.pod_schemas import RESERVED_VOLUMES
from foldline_operator.spec import PodOptions, PodTemplate

Obj = dict[str, Any]

RUN_AS = 10001
MANAGED_BY = "foldline-operator"
PART_OF = "foldline"

#: Requests a container gets for what its resources leave unset (no limits by default: a limit that is
#: too low kills a pod, a missing request only lets it be scheduled too densely).
DEFAULT_REQUESTS: dict[str, dict[str, str]] = {
    "command-handler": {"cpu": "100m", "memory": "256Mi"},
    "gateway": {"cpu": "50m", "memory": "128Mi"},
    "projector": {"cpu": "50m", "memory": "192Mi"},
    "policy": {"cpu": "50m", "memory": "192Mi"},
}

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def version_of(image: str) -> str | None:
    """The image's tag as a label value (``registry:5000/shop:1.2`` → ``1.2``); None for a digest or none."""
    name = image.rsplit("/", 1)[-1]
    if "@" in name or ":" not in name:
        return None
    tag = name.rsplit(":", 1)[1]
    return tag if len(tag) <= 63 and _LABEL_VALUE.match(tag) else None


def selector(instance: str, component: str, **extra: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "foldline",
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
        **extra,
    }


def labels(instance: str, component: str, aggregate: str, version: str | None = None, **extra: str) -> dict[str, str]:
    """The recommended ``app.kubernetes.io`` labels, plus foldline's own."""
    out = {
        **selector(instance, component),
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "foldline.io/aggregate": aggregate,
        **extra,
    }
    if version:
        out["app.kubernetes.io/version"] = version
    return out


def resources_with_defaults(component: str, resources: Mapping[str, Any]) -> Obj:
    """``resources`` with a default request for every resource it neither requests nor limits (a limit
    alone already becomes the request)."""
    out: Obj = {k: dict(v) for k, v in resources.items() if isinstance(v, Mapping)}
    requests = out.setdefault("requests", {})
    limits = out.get("limits") or {}
    for name, amount in DEFAULT_REQUESTS.get(component, {}).items():
        if name not in requests and name not in limits:
            requests[name] = amount
    return out


def _merged_env(*groups: Iterable[Mapping[str, Any]]) -> list[Obj]:
    """One entry per name, later groups winning, in first-seen order (the API treats env as a map)."""
    merged: dict[str, Obj] = {}
    for group in groups:
        for var in group:
            merged[str(var["name"])] = dict(var)
    return list(merged.values())


def _probe(path: str, period: int, failures: int) -> Obj:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def container(
    name: str, pod: PodOptions, command: list[str], env: list[Obj], port: int, resources: Obj, mounts: list[Obj]
) -> Obj:
    template = pod.template or PodTemplate()
    # The CRD refuses podTemplate volumes with these names; a mount of one would alias the operator's own.
    extra_mounts = [dict(m) for m in template.volume_mounts if m.get("name") not in RESERVED_VOLUMES]
    return {
        "name": name,
        "image": pod.image,
        "imagePullPolicy": pod.image_pull_policy,
        "command": command,
        "env": _merged_env(env, pod.env, template.env),
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        # Liveness says the loop still turns; readiness waits for restored stores. A restore may be long:
        # the startup probe gives it up to 10 minutes before liveness counts.
        "startupProbe": _probe("/healthz", 5, 120),
        "livenessProbe": _probe("/healthz", 10, 3),
        "readinessProbe": _probe("/readyz", 5, 3),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": resources,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *mounts, *extra_mounts],
    }


def spread_by_default(match: Mapping[str, str]) -> tuple[Obj, list[Obj]]:
    """Soft anti-affinity per node and an even spread per zone: a node or zone lost takes as few
    partitions with it as the cluster allows, and a one-node cluster still schedules every pod."""
    term = {"labelSelector": {"matchLabels": dict(match)}, "topologyKey": "kubernetes.io/hostname"}
    affinity = {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]
        }
    }
    spread = [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(match)},
        }
    ]
    return affinity, spread


def pod_spec(pod: PodOptions, main: Obj, volumes: list[Obj], grace: int, spread: Mapping[str, str] | None) -> Obj:
    """The pod's spec; ``spread`` (the pods' selector) adds the default placement where the podTemplate
    sets none."""
    template = pod.template or PodTemplate()
    spec: Obj = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": grace,
        "containers": [main],
        "volumes": [{"name": "tmp", "emptyDir": {}}, *volumes, *map(dict, template.volumes)],
    }
    if pod.service_account:
        spec["serviceAccountName"] = pod.service_account
    if pod.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in pod.image_pull_secrets]
    affinity, constraints = spread_by_default(spread) if spread is not None else ({}, [])
    placement: Obj = {
        "nodeSelector": dict(template.node_selector),
        "tolerations": [dict(t) for t in template.tolerations],
        "affinity": dict(template.affinity) or affinity,
        "topologySpreadConstraints": [dict(t) for t in template.topology_spread] or constraints,
        "priorityClassName": template.priority_class,
    }
    spec.update({k: v for k, v in placement.items() if v})
    return spec


def template_metadata(pod: PodOptions, object_labels: Mapping[str, str], port: int) -> Obj:
    """The pod template's labels and annotations: the podTemplate's, under the operator's own."""
    template = pod.template or PodTemplate()
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}
    return {
        "labels": {**template.labels, **object_labels},
        "annotations": {**scrape, **template.annotations},
    }
