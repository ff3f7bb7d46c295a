"""Reconciling one Projection: one projector Deployment per revision, the old one retired after the switch.

How the operator learns of the switch: it reads the projection catalog in the projection database (the
URL in the Projection's Secret, through ``foldline.projection.open_store(url).view_info(view)``). The
catalog's ``active_revision`` is the revision that serves reads (only for URLs ``databases.DatabasePolicy``
accepts: the operator never connects where a Projection author points it at its own pod); a new
revision's projector registers itself there, replays the source and switches the view over atomically
once it has caught up. Only when the catalog names the spec's revision (or a newer one) as active does
the operator delete the Deployments of older revisions. Each revision's stored positions, against the source topic's end
offsets, give the rebuild's progress and lag. A catalog the operator cannot read never retires anything.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from foldline.errors import FoldlineError
from foldline.projection import UnknownViewError, open_store
from foldline.projection.base import SqlStore
from foldline.projection.status import EndOffsets, ViewStatus, view_status
from foldline_operator import builders
from foldline_operator.aggregates import (
    Connection,
    Outcome,
    applied,
    connect,
    is_paused,
    paused_outcome,
    rfc3339,
    secret_forbidden,
)
from foldline_operator.builders import Owner
from foldline_operator.conditions import Condition, deployment_condition, find, ready
from foldline_operator.crds import API_VERSION
from foldline_operator.databases import DatabasePolicy, Refusal
from foldline_operator.kafka import KafkaPort
from foldline_operator.kube import Kube, SecretForbidden
from foldline_operator.spec import AggregateResource, ProjectionResource

KIND = "Projection"
Obj = dict[str, Any]
log = structlog.get_logger("foldline.operator")


class Catalogs:
    """One open projection store per database URL, reused by every pass; only for URLs the policy accepts.

    Connecting, and waiting for a pooled connection, take at most ``timeout`` seconds, and opening a store
    holds only its URL's lock: an unreachable database delays only the Projections that use it.
    """

    def __init__(self, policy: DatabasePolicy | None = None, timeout: float = 5.0) -> None:
        self.policy = policy or DatabasePolicy()
        self.timeout = timeout
        self._stores: dict[str, SqlStore] = {}
        self._opening: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def _store(self, url: str) -> SqlStore:
        with self._lock:
            store = self._stores.get(url)
            opening = self._opening.setdefault(url, threading.Lock())
        if store is not None:
            return store
        with opening:
            with self._lock:
                store = self._stores.get(url)
            if store is None:
                store = open_store(url, pool_size=2, connect_timeout=self.timeout)
                with self._lock:
                    self._stores[url] = store
        return store

    def refusal(self, url: str) -> Refusal | None:
        """Why the operator must not connect to ``url`` (checked on every pass: DNS may change)."""
        return self.policy.check(url, _resolve)

    def status(self, url: str, view: str, end_offsets: EndOffsets) -> ViewStatus | None:
        """The view's catalog entry with progress and lag; None while no projector has registered it."""
        store = self._store(url)
        try:
            return view_status(store, view, end_offsets)
        except UnknownViewError:
            return None


def _resolve(host: str) -> Sequence[str]:
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)})


def rebuild_status(previous: Mapping[str, Any] | None, revision: int, progress: float, now: datetime) -> Obj:
    """``status.rebuild`` of a revision replaying its source; ``startedAt`` survives later passes."""
    same = previous is not None and previous.get("revision") == revision
    started = str(previous["startedAt"]) if same and previous and previous.get("startedAt") else rfc3339(now)
    return {"revision": revision, "progress": progress, "startedAt": started}


class ProjectionReconciler:
    def __init__(self, kube: Kube, kafka: KafkaPort, catalogs: Catalogs | None = None) -> None:
        self.kube = kube
        self.kafka = kafka
        self.catalogs = catalogs or Catalogs()

    def reconcile(self, body: Mapping[str, Any], now: datetime | None = None) -> Outcome:
        now = now or datetime.now(UTC)
        meta, status = body["metadata"], dict(body.get("status") or {})
        if is_paused(meta):
            return paused_outcome(status)
        owner = Owner(KIND, meta["name"], meta["uid"], meta["namespace"])
        out: Obj = {"observedGeneration": int(meta.get("generation", 0)), "paused": False}
        try:
            spec = ProjectionResource.parse(owner.name, body["spec"])
        except (KeyError, ValueError) as exc:
            return _failed(out, Condition("AggregateReady", False, "InvalidSpec", str(exc)))

        found = self._aggregate(owner, spec)
        if isinstance(found, Condition):
            return _failed(out, found)
        aggregate, connection = found
        try:
            secret = self.kube.secret(owner.namespace, spec.database.name) or {}
        except SecretForbidden:
            reason = "DatabaseSecretForbidden"
            return _failed(
                out, Condition("DatabaseReady", False, reason, secret_forbidden(owner.namespace, spec.database.name))
            )
        url = secret.get(spec.database.key)
        if not url:
            return _failed(
                out,
                Condition(
                    "DatabaseReady",
                    False,
                    "DatabaseSecretMissing",
                    f"Secret {spec.database.name} has no key {spec.database.key}",
                ),
            )

        deployment = builders.projector_deployment(owner, spec, aggregate, connection.auth)
        events = [e for obj in (deployment, builders.pdb(owner, deployment)) if (e := applied(self.kube, obj))]
        current = self.kube.get("apps/v1", "Deployment", owner.namespace, deployment["metadata"]["name"])
        out["suspended"] = spec.suspend
        projector = deployment_condition(
            "ProjectorReady", f"revision {spec.revision} projector", current, 0 if spec.suspend else spec.replicas
        )
        if spec.suspend and projector.status is True:
            projector = Condition("ProjectorReady", False, "Suspended", "spec.suspend: the projector is scaled to zero")

        refusal = self.catalogs.refusal(url)
        if refusal is not None:
            active = Condition("RevisionActive", None, refusal.reason, refusal.message)
            return Outcome(out, [projector, active, ready([projector, active])], events, applied=True)
        try:
            found_status = self.catalogs.status(
                url, spec.view, lambda topic: self.kafka.offsets(connection.config, topic)
            )
        except FoldlineError as exc:
            active = Condition("RevisionActive", False, "CatalogUnavailable", f"{type(exc).__name__}: {exc}")
            return Outcome(out, [projector, active, ready([projector, active])], events, applied=True)
        active, retire = revision_state(spec, found_status, status, now, out)
        if retire:
            events += self._retire(owner, keep=spec.revision)
        return Outcome(out, [projector, active, ready([projector, active])], events, applied=True)

    def _aggregate(self, owner: Owner, spec: ProjectionResource) -> tuple[AggregateResource, Connection] | Condition:
        esa = self.kube.get(API_VERSION, "EventSourcedAggregate", owner.namespace, spec.aggregate_ref)
        if esa is None:
            return Condition(
                "AggregateReady",
                False,
                "AggregateNotFound",
                f"EventSourcedAggregate {spec.aggregate_ref} does not exist in {owner.namespace}",
            )
        topics = find((esa.get("status") or {}).get("conditions"), "TopicsReady")
        if topics is None or topics.get("status") != "True":
            return Condition(
                "AggregateReady", False, "TopicsNotReady", f"the topics of {spec.aggregate_ref} are not ready yet"
            )
        aggregate = AggregateResource.parse(esa["metadata"]["name"], esa["spec"])
        connection = connect(self.kube, owner.namespace, aggregate)
        if isinstance(connection, Condition):
            return Condition("AggregateReady", False, connection.reason, connection.message)
        return aggregate, connection

    def _retire(self, owner: Owner, keep: int) -> list[tuple[str, str, str]]:
        """Delete the projector Deployments (and PDBs) of every revision but ``keep``."""
        events = []
        match = builders.selector_string(builders.selector(owner.name, "projector"))
        for item in self.kube.list("apps/v1", "Deployment", owner.namespace, match):
            revision = (item["metadata"].get("labels") or {}).get("foldline.io/revision")
            if revision == str(keep):
                continue
            name = item["metadata"]["name"]
            self.kube.delete("policy/v1", "PodDisruptionBudget", owner.namespace, name)
            if self.kube.delete("apps/v1", "Deployment", owner.namespace, name):
                events.append(
                    (
                        "Normal",
                        "ProjectorRetired",
                        f"revision {keep} is active: deleted the revision {revision} projector {name}",
                    )
                )
        return events


def revision_state(
    spec: ProjectionResource, view: ViewStatus | None, status: Mapping[str, Any], now: datetime, out: Obj
) -> tuple[Condition, bool]:
    """RevisionActive (and status fields into ``out``), and whether older projectors may go: only once the
    catalog names the spec's revision (or a newer one) active."""
    if view is None:
        return Condition(
            "RevisionActive", False, "Registering", f"no projector has registered view {spec.view} in the catalog yet"
        ), False
    ours = next((r for r in view.revisions if r.revision == spec.revision), None)
    out["activeRevision"] = view.active_revision
    out["lag"] = view.lag
    progress = round(ours.progress, 4) if ours and ours.progress is not None else 0.0
    out["progress"] = progress
    if ours is not None and ours.source != spec.source:
        return Condition(
            "RevisionActive",
            False,
            "SourceMismatch",
            f"revision {spec.revision} reads {ours.source}, spec.source says {spec.source}",
        ), False
    if view.active_revision is not None and view.active_revision >= spec.revision:
        out["rebuild"] = None
        return Condition("RevisionActive", True, "Active", f"revision {view.active_revision} serves the view"), True
    out["rebuild"] = rebuild_status(status.get("rebuild"), spec.revision, progress, now)
    if ours is None and view.building_revision is not None:
        return Condition(
            "RevisionActive",
            False,
            "RevisionMismatch",
            f"the projector registered revision {view.building_revision}, spec.revision is "
            f"{spec.revision}: it must equal the Projection class's revision",
        ), False
    return Condition(
        "RevisionActive",
        False,
        "Rebuilding",
        f"revision {spec.revision} is replaying its source ({progress:.0%}); revision "
        f"{view.active_revision} serves until it has caught up",
    ), False


def _failed(out: Obj, condition: Condition) -> Outcome:
    return Outcome(out, [condition, ready([condition])])
