"""The CustomResourceDefinitions, written once here and rendered to ``manifests/crds`` and the chart.

The chart keeps foldline's own in ``files/crds`` and templates them (``crds.install``, ``crds.keep``), so
that ``helm upgrade`` upgrades them (Helm never touches a chart's ``crds/`` folder after the first install);
kopf's peering kinds, which never change, stay in ``crds/``.

``python -m foldline_operator.crds --write`` regenerates both copies; ``--check`` fails when a file on
disk differs from what this module generates (a unit test does the same, so they cannot drift).

Besides foldline's own kinds this ships kopf's peering kinds: two operator replicas use them to
agree that only the one with the highest priority acts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from foldline_operator.policy_spec import policy_schema
from foldline_operator.schema_types import Schema
from foldline_operator.schemas import aggregate_schema, projection_schema

GROUP = "foldline.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


def _column(name: str, type_: str, path: str, description: str = "", priority: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if description:
        out["description"] = description
    if priority:
        out["priority"] = priority
    return out


_READY = '.status.conditions[?(@.type=="Ready")].status'
_AGE = _column("Age", "date", ".metadata.creationTimestamp")


def _crd(
    kind: str,
    plural: str,
    short: list[str],
    schema: Schema,
    columns: list[dict[str, Any]],
    scale: dict[str, str] | None = None,
) -> dict[str, Any]:
    subresources: dict[str, Any] = {"status": {}}
    if scale:
        subresources["scale"] = scale
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "foldline"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short,
                "categories": ["foldline"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def aggregate_crd() -> dict[str, Any]:
    return _crd(
        "EventSourcedAggregate",
        "eventsourcedaggregates",
        ["esa"],
        aggregate_schema(),
        [
            _column("Ready", "string", _READY),
            _column("Partitions", "integer", ".status.partitions", "Partitions the topics have"),
            _column("Replicas", "integer", ".status.replicas", "Command-handler pods"),
            _column("Lag", "integer", ".status.lag", "Commands not yet handled"),
            _column("Reason", "string", '.status.conditions[?(@.type=="Ready")].reason', priority=1),
            _AGE,
        ],
        scale={
            "specReplicasPath": ".spec.handlers.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    )


def projection_crd() -> dict[str, Any]:
    return _crd(
        "Projection",
        "projections",
        ["proj"],
        projection_schema(),
        [
            _column("Ready", "string", _READY),
            _column("Aggregate", "string", ".spec.aggregateRef.name"),
            _column("Revision", "integer", ".spec.revision"),
            _column("Active", "integer", ".status.activeRevision", "Revision serving reads"),
            _column("Progress", "number", ".status.progress"),
            _column("Lag", "integer", ".status.lag"),
            _AGE,
        ],
    )


def policy_crd() -> dict[str, Any]:
    return _crd(
        "Policy",
        "policies",
        ["pol"],
        policy_schema(),
        [
            _column("Ready", "string", _READY),
            _column("Replicas", "integer", ".status.replicas", "Policy worker pods"),
            _column("Lag", "integer", ".status.lag", "Source events not yet handled"),
            _column("Deadlines", "integer", ".status.scheduledDeadlines", "Deadlines pending"),
            _column("Next", "date", ".status.nextDeadline", "The earliest pending deadline", priority=1),
            _column("Reason", "string", '.status.conditions[?(@.type=="Ready")].reason', priority=1),
            _AGE,
        ],
    )


def peering_crds() -> list[dict[str, Any]]:
    """kopf's peering kinds (group kopf.dev), as kopf documents them: free-form status, no subresource."""
    out = []
    for kind, scope in (("ClusterKopfPeering", "Cluster"), ("KopfPeering", "Namespaced")):
        plural = kind.lower() + "s"
        out.append(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.kopf.dev"},
                "spec": {
                    "scope": scope,
                    "group": "kopf.dev",
                    "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                    "versions": [
                        {
                            "name": "v1",
                            "served": True,
                            "storage": True,
                            "schema": {
                                "openAPIV3Schema": {
                                    "type": "object",
                                    "properties": {
                                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                                    },
                                }
                            },
                        }
                    ],
                },
            }
        )
    return out


def all_crds() -> list[dict[str, Any]]:
    return [aggregate_crd(), projection_crd(), policy_crd(), *peering_crds()]


HEADER = (
    "# Generated by `python -m foldline_operator.crds --write` from operator/foldline_operator/crds.py.\n"
    "# Do not edit: change crds.py and regenerate (a unit test fails when they differ).\n"
)


def render(crd: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(crd, sort_keys=False, width=120)


def rendered_files(repo: Path) -> dict[Path, str]:
    """Every generated file, keyed by its path, in both the manifests and the chart."""
    out: dict[Path, str] = {}
    chart = repo / "charts" / "foldline"
    for crd in all_crds():
        text = render(crd)
        # kopf's peering kinds stay in crds/ (installed before any template): the chart creates a peering
        # object, and Helm refuses a release whose templates use a kind that is not yet served.
        templated = crd["spec"]["group"] == GROUP
        for folder in (repo / "manifests" / "crds", chart / "files" / "crds" if templated else chart / "crds"):
            out[folder / f"{crd['metadata']['name']}.yaml"] = text
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m foldline_operator.crds", description=__doc__)
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[2])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="regenerate the YAML files")
    group.add_argument("--check", action="store_true", help="exit 1 when a file differs from the generated one")
    args = parser.parse_args(argv)
    stale = []
    for path, text in rendered_files(args.repo).items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if args.write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{'wrote' if args.write else 'stale'} {path.relative_to(args.repo)}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
