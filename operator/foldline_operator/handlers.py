"""kopf wiring: which events run which reconciler, how status and Events are written, and kopf's settings.

Every kind is reconciled the same way: on create, on every change of spec/labels/annotations, when
the operator starts (resume), and every ``resync_seconds`` (a timer), always through one function that
recomputes everything. A per-object lock keeps the timer and an event from running it at once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
import structlog

from foldline.errors import PermanentError, RetryableError
from foldline.observability import metrics, series
from foldline_operator.aggregates import AggregateReconciler, Outcome, rfc3339
from foldline_operator.conditions import Condition, find, merge
from foldline_operator.config import OperatorConfig
from foldline_operator.crds import API_VERSION, GROUP, VERSION
from foldline_operator.kafka import KafkaPort
from foldline_operator.kube import Kube, load_config
from foldline_operator.policies import PolicyReconciler
from foldline_operator.projections import ProjectionReconciler

log = structlog.get_logger("foldline.operator")

#: Reasons that are expected states rather than faults; other False conditions count as errors.
#: Reasons of conditions that are True (the part works) but need a person's attention.
_WARNINGS = frozenset({"ReplicationFactorDiffers", "ScaleIgnored"})
_EXPECTED = frozenset(
    {"Progressing", "DeploymentMissing", "StatefulSetMissing", "Paused", "Suspended", "Rebuilding", "Registering"}
)


class Locks:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def of(self, uid: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(uid, threading.Lock())

    def forget(self, uid: str) -> None:
        with self._guard:
            self._locks.pop(uid, None)


def configure(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    settings.watching.server_timeout = config.watch_server_timeout
    settings.watching.client_timeout = config.watch_client_timeout
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.peering.mandatory = not config.standalone
    settings.peering.standalone = config.standalone
    settings.peering.clusterwide = True
    settings.peering.lifetime = config.peering_lifetime
    settings.peering.stealth = True
    settings.posting.level = logging.WARNING  # our own Events say what changed; kopf's would repeat it
    settings.execution.max_workers = 8


def status_patch(current: Mapping[str, Any], outcome: Outcome, generation: int, now: str) -> dict[str, Any]:
    """Only the status fields that differ from ``current``: a quiet resync writes nothing."""
    wanted = dict(outcome.status)
    wanted["conditions"] = merge(
        current.get("conditions"),
        outcome.conditions,
        now,
        int(wanted.get("observedGeneration", current.get("observedGeneration", generation))),
    )
    return {k: v for k, v in wanted.items() if current.get(k) != v}


def spec_records(outcome: Outcome, spec: Mapping[str, Any], generation: int) -> dict[str, Any]:
    """``lastAppliedSpec`` (the spec the workloads were last built from) and ``lastGoodSpec`` (the last one
    that was Ready), as the Flink operator keeps them: what runs, and what to go back to."""
    record = {"generation": generation, "spec": json.dumps(spec, sort_keys=True, separators=(",", ":"))}
    out: dict[str, Any] = {}
    if outcome.applied:
        out["lastAppliedSpec"] = record
        if any(c.type == "Ready" and c.status is True for c in outcome.conditions):
            out["lastGoodSpec"] = record
    return out


def transition_events(current: Mapping[str, Any], conditions: list[Condition]) -> list[tuple[str, str, str]]:
    """One Event per condition whose status or reason changed."""
    out = []
    for c in conditions:
        before = find(current.get("conditions"), c.type)
        if before is None or before.get("status") != c.status_word or before.get("reason") != c.reason:
            normal = (c.status is True and c.reason not in _WARNINGS) or c.reason in _EXPECTED or c.type == "Ready"
            out.append(("Normal" if normal else "Warning", c.reason or c.type, f"{c.type}: {c.message}"))
    return out


def kopf_error(exc: Exception) -> kopf.TemporaryError | kopf.PermanentError:
    """What kopf should do about a failed reconciliation: retry soon, or wait for the object to change.

    A foldline ``PermanentError`` (bad configuration, topics that must not be changed, a broken
    declaration) cannot heal by retrying; the periodic resync still looks again.
    """
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, PermanentError):
        return kopf.PermanentError(message)
    return kopf.TemporaryError(message, delay=10)


class Runner:
    """Runs one reconciler for one object at a time, on a fresh read, and writes its status itself.

    The body kopf hands over may be older than the object (a timer and an event race), so the pass
    re-reads it under the object's lock, and the status is patched before the lock is released: the next
    pass always sees the previous one's result.
    """

    def __init__(self, kind: str, kube: Kube, reconcile: Callable[[Mapping[str, Any]], Outcome], locks: Locks) -> None:
        self.kind, self.kube, self.reconcile, self.locks = kind, kube, reconcile, locks

    def __call__(self, body: kopf.Body) -> None:
        meta = body.metadata
        bound = log.bind(kind=self.kind, namespace=meta.namespace, name=meta.name)
        started = time.perf_counter()
        with self.locks.of(str(meta.uid)):
            try:
                fresh = self.kube.get(API_VERSION, self.kind, str(meta.namespace), str(meta.name))
                if fresh is None or fresh["metadata"].get("deletionTimestamp"):
                    series.operator_resource_gone(self.kind, str(meta.namespace), str(meta.name))
                    return
                outcome = self.reconcile(fresh)
                generation = int(fresh["metadata"].get("generation") or 0)
                outcome.status.update(spec_records(outcome, fresh.get("spec") or {}, generation))
                current = dict(fresh.get("status") or {})
                changes = status_patch(
                    current, outcome, int(fresh["metadata"].get("generation") or 0), rfc3339(datetime.now(UTC))
                )
                if changes:
                    self.kube.patch_status(API_VERSION, self.kind, str(meta.namespace), str(meta.name), changes)
            except Exception as exc:
                metrics.OPERATOR_RECONCILES.labels(self.kind, "error").inc()
                metrics.OPERATOR_ERRORS.labels(self.kind, type(exc).__name__).inc()
                bound.warning("reconcile failed", error=str(exc), error_type=type(exc).__name__)
                raise kopf_error(exc) from exc
            finally:
                metrics.OPERATOR_RECONCILE_SECONDS.labels(self.kind).observe(time.perf_counter() - started)
        ready = next((c for c in outcome.conditions if c.type == "Ready"), None)
        result = "paused" if outcome.status.get("paused") else "ready" if ready and ready.status else "not_ready"
        metrics.OPERATOR_RECONCILES.labels(self.kind, result).inc()
        if result == "paused":  # not a fault: the not-Ready alert must not page for it
            series.operator_resource_gone(self.kind, str(meta.namespace), str(meta.name))
        else:
            lag = outcome.status.get("lag")
            series.operator_resource(
                self.kind,
                str(meta.namespace),
                str(meta.name),
                ready=result == "ready",
                lag=lag if isinstance(lag, int) else None,
            )
        for c in outcome.conditions:
            if c.status is False and c.type != "Ready" and c.reason not in _EXPECTED:
                metrics.OPERATOR_ERRORS.labels(self.kind, c.reason).inc()
        for type_, reason, message in [*outcome.events, *transition_events(current, outcome.conditions)]:
            kopf.event(body, type=type_, reason=reason, message=message)
            bound.info("event", type=type_, reason=reason, message=message)


def register(config: OperatorConfig, registry: kopf.OperatorRegistry | None = None) -> kopf.OperatorRegistry:
    """Register every handler on ``registry`` (a new one by default) and return it."""
    registry = registry or kopf.OperatorRegistry()
    locks = Locks()
    kafka = KafkaPort(config.kafka_timeout)
    runtime: dict[str, Any] = {}

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A registry of our own gets no default login handlers: use the kubernetes client's config
        # (in-cluster service account or kubeconfig), as kopf's default would.
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings, config)
        load_config()
        series.operator_started(["EventSourcedAggregate", "Projection", "Policy"])
        kube = Kube()
        runtime["aggregates"] = AggregateReconciler(kube, kafka)
        runtime["EventSourcedAggregate"] = Runner("EventSourcedAggregate", kube, runtime["aggregates"].reconcile, locks)
        runtime["Projection"] = Runner("Projection", kube, ProjectionReconciler(kube, kafka).reconcile, locks)
        runtime["policies"] = PolicyReconciler(kube, kafka)
        runtime["Policy"] = Runner("Policy", kube, runtime["policies"].reconcile, locks)
        log.info(
            "operator starting",
            peering=config.peering,
            priority=config.priority,
            namespaces=list(config.namespaces) or "all",
            resync_seconds=config.resync_seconds,
        )

    def aggregates(body: kopf.Body, **_: Any) -> None:
        runtime["EventSourcedAggregate"](body)

    def projections(body: kopf.Body, **_: Any) -> None:
        runtime["Projection"](body)

    def policies(body: kopf.Body, **_: Any) -> None:
        runtime["Policy"](body)

    for plural, fn in (("eventsourcedaggregates", aggregates), ("projections", projections), ("policies", policies)):
        kopf.on.resume(GROUP, VERSION, plural, id="reconcile", registry=registry)(fn)
        kopf.on.create(GROUP, VERSION, plural, id="reconcile", registry=registry)(fn)
        kopf.on.update(GROUP, VERSION, plural, id="reconcile", registry=registry)(fn)
        kopf.timer(GROUP, VERSION, plural, id="resync", interval=config.resync_seconds, registry=registry)(fn)

    @kopf.on.delete(GROUP, VERSION, "eventsourcedaggregates", id="deletion-policy", registry=registry)
    def finalize(body: kopf.Body, **_: Any) -> None:
        try:
            events = runtime["aggregates"].finalize(body)
        except RetryableError as exc:
            metrics.OPERATOR_ERRORS.labels("EventSourcedAggregate", "DeletionFailed").inc()
            kopf.event(body, type="Warning", reason="DeletionFailed", message=str(exc))
            raise kopf.TemporaryError(str(exc), delay=15) from exc
        for type_, reason, message in events:
            kopf.event(body, type=type_, reason=reason, message=message)
            log.info("event", kind="EventSourcedAggregate", name=body.metadata.name, reason=reason, message=message)
        locks.forget(str(body.metadata.uid))
        series.operator_resource_gone("EventSourcedAggregate", str(body.metadata.namespace), str(body.metadata.name))

    @kopf.on.delete(GROUP, VERSION, "projections", id="forget", optional=True, registry=registry)
    def forget(body: kopf.Body, **_: Any) -> None:
        locks.forget(str(body.metadata.uid))  # its Deployments go with it (owner references)
        series.operator_resource_gone("Projection", str(body.metadata.namespace), str(body.metadata.name))

    @kopf.on.delete(GROUP, VERSION, "policies", id="forget", optional=True, registry=registry)
    def forget_policy(body: kopf.Body, **_: Any) -> None:
        # Its Deployment goes with it (owner references); its topics stay, as an aggregate's do by default.
        locks.forget(str(body.metadata.uid))
        runtime["policies"].forget(str(body.metadata.uid))
        series.operator_resource_gone("Policy", str(body.metadata.namespace), str(body.metadata.name))

    return registry
