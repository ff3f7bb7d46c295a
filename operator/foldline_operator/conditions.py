"""Conditions (type, status, reason, message) computed from what the operator saw: pure functions.

``merge`` keeps a condition's ``lastTransitionTime`` while its status stays the same, so a resync that
finds nothing new writes an identical status (and Kubernetes sees no change).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool | None  # None: Unknown
    reason: str
    message: str = ""

    @property
    def status_word(self) -> str:
        return "Unknown" if self.status is None else str(self.status)


def merge(
    previous: Sequence[Mapping[str, Any]] | None, conditions: Iterable[Condition], now: str, generation: int
) -> list[dict[str, Any]]:
    """The status' condition list; unmentioned types of ``previous`` are dropped."""
    old = {c.get("type"): c for c in previous or ()}
    out = []
    for c in conditions:
        before = old.get(c.type)
        same = before is not None and before.get("status") == c.status_word
        out.append(
            {
                "type": c.type,
                "status": c.status_word,
                "reason": c.reason,
                "message": c.message,
                "lastTransitionTime": before.get("lastTransitionTime", now) if same and before else now,
                "observedGeneration": generation,
            }
        )
    return out


def from_status(conditions: Sequence[Mapping[str, Any]] | None) -> list[Condition]:
    """Conditions as written in a status, back as ``Condition`` values."""
    words = {"True": True, "False": False}
    return [
        Condition(
            str(c.get("type")), words.get(str(c.get("status"))), str(c.get("reason") or ""), str(c.get("message") or "")
        )
        for c in conditions or ()
    ]


def find(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions or () if c.get("type") == type_), None)


def deployment_condition(
    type_: str, what: str, deployment: Mapping[str, Any] | None, desired: int, kind: str = "Deployment"
) -> Condition:
    """Available when the workload's controller (a Deployment's or a StatefulSet's: their status has the
    same fields) has seen the newest spec and enough pods are ready."""
    kind = str((deployment or {}).get("kind") or kind)
    if deployment is None:
        return Condition(type_, False, f"{kind}Missing", f"the {what} {kind} does not exist yet")
    status = deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation", 0)
    if status.get("observedGeneration", 0) < generation:
        return Condition(type_, False, "Progressing", f"the {what} {kind}'s newest spec is being rolled out")
    if desired == 0:
        return Condition(type_, True, "ScaledToZero", f"the {what} {kind} is scaled to zero")
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if available >= desired and updated >= desired:
        return Condition(type_, True, "Available", f"{available}/{desired} {what} pods available")
    return Condition(type_, False, "Progressing", f"{available}/{desired} {what} pods available, {updated} updated")


def ready(parts: Sequence[Condition], *, paused: bool = False) -> Condition:
    """``Ready`` is the conjunction of the others; its reason names the first one that is not True."""
    if paused:
        return Condition("Ready", None, "Paused", "reconciliation is paused (annotation foldline.io/paused)")
    for part in parts:
        if part.status is not True:
            reason = part.type.replace("Ready", "NotReady") if part.status is False else f"{part.type}Unknown"
            if part.reason == "Suspended":
                reason = "Suspended"
            return Condition("Ready", False, reason, f"{part.type}: {part.message}")
    return Condition("Ready", True, "Ready", "all parts are ready")
