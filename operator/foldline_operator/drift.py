"""Drift of the Deployments and StatefulSets the operator owns: which watch events call for a pass of
their owner at once (a changed spec, a deleted object) instead of at the next periodic resync.

The watch sees every change of these objects, status included (pods becoming ready): only a new
``metadata.generation`` (the API server bumps it on every spec change) or a deletion is drift. Pure
bookkeeping, no I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from foldline_operator.crds import API_VERSION
from foldline_operator.pods import MANAGED_BY

#: The labels every object the operator builds carries (``pods.labels``): the watches' filter.
OWNED_LABELS = {"app.kubernetes.io/managed-by": MANAGED_BY}


class Generations:
    """The last generation seen per object uid."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def drifted(self, event_type: str | None, uid: str, generation: int) -> bool:
        """Whether this watch event calls for the owner's pass: the object was deleted, or its spec changed
        since the last event (the initial listing, ``None``, and additions only remember the generation)."""
        with self._lock:
            if event_type == "DELETED":
                self._seen.pop(uid, None)
                return True
            before = self._seen.get(uid)
            self._seen[uid] = generation
        return event_type == "MODIFIED" and before is not None and before != generation


def controller(meta: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, name) of the foldline resource that controls the object, if one does."""
    for ref in meta.get("ownerReferences") or ():
        if ref.get("controller") and ref.get("apiVersion") == API_VERSION:
            return str(ref.get("kind")), str(ref.get("name"))
    return None
