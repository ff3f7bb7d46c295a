"""Who sets a command handler's replicas: ``spec.handlers.autoscaling``, or whoever writes the scale
subresource (``kubectl scale``, an HPA, a KEDA ScaledObject). With autoscaling on the lag always wins;
the Autoscaling condition names whatever else tries, so nobody wonders why their scaler does nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from foldline_operator.conditions import Condition
from foldline_operator.kube import Kube, KubeError
from foldline_operator.spec import AggregateResource

KIND = "EventSourcedAggregate"
GROUP = "foldline.io"
#: The objects that scale a target through its scale subresource (KEDA's CRD may be absent: a 404 lists none).
SCALERS = (("autoscaling/v2", "HorizontalPodAutoscaler"), ("keda.sh/v1alpha1", "ScaledObject"))


def aims_at(scaler: Mapping[str, Any], name: str) -> bool:
    """Whether an HPA's or ScaledObject's ``scaleTargetRef`` is this aggregate (KEDA defaults to apps/v1)."""
    ref = (scaler.get("spec") or {}).get("scaleTargetRef") or {}
    group = str(ref.get("apiVersion") or "apps/v1").split("/")[0]
    return group == GROUP and ref.get("kind") == KIND and ref.get("name") == name


def external_scalers(kube: Kube, namespace: str, name: str) -> list[str]:
    """ "HorizontalPodAutoscaler x", "ScaledObject y": the scalers aimed at this aggregate.

    The HPA KEDA makes for its ScaledObject is left out (the ScaledObject is named). A kind the operator
    may not list (403) is left out too: this is a report, and a report must not fail the reconcile.
    """
    found: list[str] = []
    for api_version, kind in SCALERS:
        try:
            items = kube.list(api_version, kind, namespace)
        except KubeError as exc:
            if exc.status == 403:
                continue
            raise
        for item in items:
            owners = item["metadata"].get("ownerReferences") or ()
            if any(o.get("kind") == "ScaledObject" for o in owners):
                continue
            if aims_at(item, name):
                found.append(f"{kind} {item['metadata']['name']}")
    return sorted(found)


def scale_writers(meta: Mapping[str, Any]) -> list[str]:
    """Field managers that set the replicas through the scale subresource (``kubectl scale``, an HPA, KEDA)."""
    entries = meta.get("managedFields") or ()
    return sorted({str(e.get("manager") or "?") for e in entries if e.get("subresource") == "scale"})


def autoscaling_condition(
    spec: AggregateResource, meta: Mapping[str, Any], desired: int, scalers: list[str]
) -> Condition | None:
    """Who decides the replicas. With autoscaling on: the lag, always; an HPA or ScaledObject aimed at the
    resource (``AutoscalerConflict``) or a scale-subresource write (``ScaleIgnored``) is ignored, and this
    says so (both reasons are Warnings). With autoscaling off an HPA or ScaledObject decides (``External``)."""
    if spec.autoscaling is None:
        if not scalers:
            return None
        return Condition(
            "Autoscaling",
            True,
            "External",
            f"{', '.join(scalers)} sets spec.handlers.replicas through the scale subresource "
            f"({spec.replicas} now); the operator follows it",
        )
    if scalers:
        return Condition(
            "Autoscaling",
            True,
            "AutoscalerConflict",
            f"{', '.join(scalers)} aims at this resource's scale subresource, but spec.handlers.autoscaling "
            f"wins: {desired} replicas from the lag, and what it writes to spec.handlers.replicas is ignored. "
            "Delete it, or remove spec.handlers.autoscaling to let it scale.",
        )
    writers = scale_writers(meta)
    if writers:
        return Condition(
            "Autoscaling",
            True,
            "ScaleIgnored",
            f"spec.handlers.replicas ({spec.replicas}) was set through the scale subresource by "
            f"{', '.join(writers)}, but spec.handlers.autoscaling wins: {desired} replicas from the lag. Remove "
            "autoscaling to scale by hand, and aim no HPA or KEDA ScaledObject at this resource.",
        )
    return Condition("Autoscaling", True, "Active", f"{desired} replicas from the lag")
