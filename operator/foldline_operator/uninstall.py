"""``python -m foldline_operator.uninstall``: let foldline resources go when no operator will come back.

The only finalizer the operator sets is on EventSourcedAggregates with ``deletionPolicy: Delete`` (it
deletes their topics). With the operator uninstalled, deleting such a resource, or its namespace, waits
for it forever. This removes the operator's finalizer from the resources of the given namespaces (all by
default), so their deletion completes; their topics are kept, and listed, for a person to delete.
Run it after ``helm uninstall``, never while an operator runs (it would add the finalizer back).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from foldline.topics import TopicNames
from foldline_operator.crds import API_VERSION, GROUP
from foldline_operator.kube import Kube, KubeError, load_config

FINALIZER = f"{GROUP}/finalizer"
KINDS = ("EventSourcedAggregate", "Projection")


@dataclass(frozen=True)
class Released:
    kind: str
    namespace: str
    name: str
    #: Topics the finalizer would have deleted (``deletionPolicy: Delete``): kept now.
    kept_topics: tuple[str, ...]


def release(kube: Kube, namespaces: Sequence[str] = ()) -> list[Released]:
    """Remove the operator's finalizer from every foldline resource in ``namespaces`` (all when empty)."""
    out = []
    for kind in KINDS:
        scopes = list(namespaces) or [""]  # "": the whole cluster
        items = [item for ns in scopes for item in kube.list(API_VERSION, kind, ns)]
        for item in items:
            meta = item["metadata"]
            finalizers = list(meta.get("finalizers") or ())
            if FINALIZER not in finalizers:
                continue
            body = {
                "metadata": {
                    "resourceVersion": meta["resourceVersion"],  # a concurrent change fails it, not lost
                    "finalizers": [f for f in finalizers if f != FINALIZER],
                }
            }
            try:
                kube.request(
                    "PATCH",
                    f"/apis/{API_VERSION}/namespaces/{meta['namespace']}/{kind.lower()}s/{meta['name']}",
                    body=body,
                    content_type="application/merge-patch+json",
                )
            except KubeError as exc:
                if exc.status != 409:
                    raise
                continue  # changed meanwhile: the next run sees it again
            spec = item.get("spec") or {}
            kept: tuple[str, ...] = ()
            if kind == "EventSourcedAggregate" and spec.get("deletionPolicy") == "Delete":
                aggregate = (item.get("status") or {}).get("aggregateName") or meta["name"]
                kept = tuple(TopicNames(str(aggregate)).all())
            out.append(Released(kind, meta["namespace"], meta["name"], kept))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m foldline_operator.uninstall",
        description="Remove the foldline operator's finalizer (after helm uninstall): deletions complete, "
        "topics of deletionPolicy Delete resources are kept and listed.",
    )
    parser.add_argument("--namespace", action="append", default=[], help="only this namespace (repeatable)")
    args = parser.parse_args(argv)
    load_config()
    for item in release(Kube(), args.namespace):
        kept = f"; topics kept: {', '.join(item.kept_topics)}" if item.kept_topics else ""
        print(f"released {item.kind} {item.namespace}/{item.name}{kept}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
