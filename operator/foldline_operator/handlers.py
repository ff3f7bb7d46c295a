"""kopf wiring: which events run which reconciler, how status and Events are written, and kopf's settings.

Every kind is reconciled the same way: on create, on every change of spec/labels/annotations, when
the operator starts (resume), when an owned Deployment or StatefulSet drifts (its spec changed, or it was
deleted), and every ``resync_seconds`` (``resync.py``), always through one function that recomputes everything.
A per-object lock keeps the timer and an event from running it at once; a resync that finds a pass
running skips, and one of a resource whose Kafka or database was unreachable waits for its backoff.
"""

from __future__ import annotations

import asyncio
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
from foldline_operator import drift
from foldline_operator.aggregates import AggregateReconciler, Outcome, rfc3339
from foldline_operator.backoff import Backoff, unreachable
from foldline_operator.conditions import Condition, find, merge
from foldline_operator.config import OperatorConfig
from foldline_operator.crds import API_VERSION, GROUP, VERSION
from foldline_operator.kafka import KafkaPort
from foldline_operator.kube import Kube, load_config
from foldline_operator.policies import PolicyReconciler
from foldline_operator.probes import Probes, acting, heartbeat
from foldline_operator.projections import Catalogs, ProjectionReconciler
from foldline_operator.resync import Resyncer, Schedule, Tracked

log = structlog.get_logger("foldline.operator")

#: Reasons that are expected states rather than faults; other False conditions count as errors.
#: Reasons of conditions that are True (the part works) but need a person's attention.
_WARNINGS = frozenset({"ReplicationFactorDiffers", "ScaleIgnored", "AutoscalerConflict"})
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
    # Serving named namespaces: no namespace or CRD watching (the RBAC of that mode grants neither); the
    # CRDs are found once, at start, through API discovery.
    settings.scanning.disabled = bool(config.namespaces)
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


def kopf_error(exc: Exception, delay: float = 10.0) -> kopf.TemporaryError | kopf.PermanentError:
    """What kopf should do about a failed reconciliation: retry soon, or wait for the object to change.

    A foldline ``PermanentError`` (bad configuration, topics that must not be changed, a broken
    declaration) cannot heal by retrying; the periodic resync still looks again.
    """
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, PermanentError):
        return kopf.PermanentError(message)
    return kopf.TemporaryError(message, delay=delay)


class Runner:
    """Runs one reconciler for one object at a time, on a fresh read, and writes its status itself.

    The body kopf hands over may be older than the object (a timer and an event race), so the pass
    re-reads it under the object's lock, and the status is patched before the lock is released: the next
    pass always sees the previous one's result.
    """

    def __init__(
        self,
        kind: str,
        kube: Kube,
        reconcile: Callable[[Mapping[str, Any]], Outcome],
        locks: Locks,
        backoff: Backoff | None = None,
    ) -> None:
        self.kind, self.kube, self.reconcile, self.locks = kind, kube, reconcile, locks
        self.backoff = backoff or Backoff(10.0, 300.0)

    def __call__(self, body: Mapping[str, Any], *, periodic: bool = False) -> bool:
        """One pass; False when the object is gone. A ``periodic`` one (the resync) is skipped while the
        resource backs off after an unreachable dependency, and while another pass of it runs: no worker
        thread waits for either."""
        uid = str(body["metadata"]["uid"])
        if periodic and not self.backoff.due(uid, time.monotonic()):
            return True
        lock = self.locks.of(uid)
        if not lock.acquire(blocking=not periodic):
            return True
        try:
            return self._pass(body["metadata"])
        finally:
            lock.release()

    def forget(self, namespace: str, name: str, uid: str) -> None:
        """The resource is deleted: drop its series and its lock. A pass that read the resource just before
        may still be running and would report it again after a plain removal, leaving a series no pass ever
        removes (a "not Ready" that pages for ever): the removal waits for that pass."""
        with self.locks.of(uid):
            series.operator_resource_gone(self.kind, namespace, name)
            self.locks.forget(uid)
        self.backoff.forget(uid)

    def _pass(self, meta: Mapping[str, Any]) -> bool:
        uid, namespace, name = str(meta["uid"]), str(meta["namespace"]), str(meta["name"])
        bound = log.bind(kind=self.kind, namespace=namespace, name=name)
        started = time.perf_counter()
        try:
            fresh = self.kube.get(API_VERSION, self.kind, namespace, name)
            if fresh is None or fresh["metadata"].get("deletionTimestamp"):
                series.operator_resource_gone(self.kind, namespace, name)
                return False
            outcome = self.reconcile(fresh)
            generation = int(fresh["metadata"].get("generation") or 0)
            outcome.status.update(spec_records(outcome, fresh.get("spec") or {}, generation))
            current = dict(fresh.get("status") or {})
            changes = status_patch(
                current, outcome, int(fresh["metadata"].get("generation") or 0), rfc3339(datetime.now(UTC))
            )
            if changes:
                self.kube.patch_status(API_VERSION, self.kind, namespace, name, changes)
        except Exception as exc:
            metrics.OPERATOR_RECONCILES.labels(self.kind, "error").inc()
            metrics.OPERATOR_ERRORS.labels(self.kind, type(exc).__name__).inc()
            delay = self.backoff.failed(uid, time.monotonic())
            bound.warning("reconcile failed", error=str(exc), error_type=type(exc).__name__, retry_in=delay)
            raise kopf_error(exc, delay) from exc
        finally:
            metrics.OPERATOR_RECONCILE_SECONDS.labels(self.kind).observe(time.perf_counter() - started)
        failing = unreachable(outcome.conditions)
        if failing is None:
            self.backoff.succeeded(uid)
        else:
            delay = self.backoff.failed(uid, time.monotonic())
            bound.info("dependency unreachable: resync backs off", reason=failing, retry_in=delay)
        ready = next((c for c in outcome.conditions if c.type == "Ready"), None)
        result = "paused" if outcome.status.get("paused") else "ready" if ready and ready.status else "not_ready"
        metrics.OPERATOR_RECONCILES.labels(self.kind, result).inc()
        if result == "paused":  # not a fault: the not-Ready alert must not page for it
            series.operator_resource_gone(self.kind, namespace, name)
        else:
            lag = outcome.status.get("lag")
            series.operator_resource(
                self.kind,
                namespace,
                name,
                ready=result == "ready",
                lag=lag if isinstance(lag, int) else None,
            )
        for c in outcome.conditions:
            if c.status is False and c.type != "Ready" and c.reason not in _EXPECTED:
                metrics.OPERATOR_ERRORS.labels(self.kind, c.reason).inc()
        for type_, reason, message in [*outcome.events, *transition_events(current, outcome.conditions)]:
            self.kube.event(fresh, type_, reason, message)  # posted here: resync passes run outside kopf
            bound.info("event", type=type_, reason=reason, message=message)
        return True


def watch_peering(kube: Kube, config: OperatorConfig, probes: Probes, stop: threading.Event) -> None:
    """Keep ``probes.acting`` current from the peering object, every few seconds, until ``stop``."""
    while not stop.is_set():
        try:
            found = [
                item
                for item in kube.list("kopf.dev/v1", "ClusterKopfPeering", "")
                if item["metadata"]["name"] == config.peering
            ]
            peers = (found[0].get("status") or {}) if found else {}
            probes.set_acting(acting(peers, config.priority, datetime.now(UTC)))
        except Exception as exc:  # the API server away: keep the last answer, look again
            log.warning("cannot read the peering object", error=str(exc), error_type=type(exc).__name__)
        stop.wait(min(2.0, config.peering_lifetime / 2))


def register(
    config: OperatorConfig, registry: kopf.OperatorRegistry | None = None, probes: Probes | None = None
) -> kopf.OperatorRegistry:
    """Register every handler on ``registry`` (a new one by default) and return it."""
    registry = registry or kopf.OperatorRegistry()
    probes = probes or Probes()
    locks = Locks()
    backoff = Backoff(config.backoff_base_seconds, config.backoff_max_seconds)
    kafka = KafkaPort(config.kafka_timeout)
    generations = drift.Generations()
    schedule = Schedule(config.resync_seconds)
    stop = threading.Event()
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
        kube = runtime["kube"] = Kube()
        runtime["aggregates"] = AggregateReconciler(kube, kafka)
        runtime["EventSourcedAggregate"] = Runner(
            "EventSourcedAggregate", kube, runtime["aggregates"].reconcile, locks, backoff
        )
        projections = ProjectionReconciler(kube, kafka, Catalogs(config.database_policy, config.database_timeout))
        runtime["Projection"] = Runner("Projection", kube, projections.reconcile, locks, backoff)
        runtime["policies"] = PolicyReconciler(kube, kafka)
        runtime["Policy"] = Runner("Policy", kube, runtime["policies"].reconcile, locks, backoff)

        def periodic(item: Tracked) -> None:
            meta = {"uid": item.uid, "namespace": item.namespace, "name": item.name}
            if not runtime[item.kind]({"metadata": meta}, periodic=True):
                schedule.gone(item.uid)

        runtime["resync"] = Resyncer(schedule, periodic, probes.acting).start()
        if not config.standalone:
            threading.Thread(
                target=watch_peering, args=(kube, config, probes, stop), name="peering-probe", daemon=True
            ).start()
        log.info(
            "operator starting",
            peering=config.peering,
            priority=config.priority,
            namespaces=list(config.namespaces) or "all",
            resync_seconds=config.resync_seconds,
        )

    @kopf.on.startup(registry=registry)
    async def start_heartbeat(**_: Any) -> None:
        # A task on kopf's own event loop: when the loop is stuck, the beats stop and /healthz fails.
        runtime["heartbeat"] = asyncio.get_running_loop().create_task(heartbeat(probes))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        stop.set()
        if "resync" in runtime:
            runtime["resync"].stop()
        task = runtime.pop("heartbeat", None)
        if task is not None:
            task.cancel()

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

    def repair(type: str | None, body: kopf.Body, **_: Any) -> None:
        """An owned Deployment or StatefulSet changed its spec or went away: its owner's pass, at once."""
        meta = body.metadata
        if not generations.drifted(type, str(meta.uid), int(meta.get("generation") or 0)):
            return
        owner = drift.controller(meta)
        runner = runtime.get(owner[0]) if owner else None
        if owner is None or not isinstance(runner, Runner):
            return
        found = runner.kube.get(API_VERSION, owner[0], str(meta.namespace), owner[1])
        if found is None or found["metadata"].get("deletionTimestamp"):
            return
        log.info("owned object drifted", kind=body.get("kind"), name=meta.name, change=type, owner=owner[1])
        runner(found)

    for plural in ("deployments", "statefulsets"):
        kopf.on.event("apps", "v1", plural, id="drift", labels=drift.OWNED_LABELS, registry=registry)(repair)

    def deletes_topics(spec: kopf.Spec, **_: Any) -> bool:
        return spec.get("deletionPolicy") == "Delete"

    # The only finalizer: an aggregate whose topics go with it (deletionPolicy Delete). kopf adds it while
    # the policy is Delete and removes it when the policy changes; everything else is deleted at once, by
    # the API server and its garbage collector, whether an operator runs or not.
    @kopf.on.delete(
        GROUP, VERSION, "eventsourcedaggregates", id="deletion-policy", when=deletes_topics, registry=registry
    )
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

    def track(kind: str, type: str | None, body: kopf.Body) -> None:
        """Every watch event of a resource: tracked for the resync; when deleted, forgotten."""
        meta = body.metadata
        if type != "DELETED":
            schedule.seen(Tracked(kind, str(meta.namespace), str(meta.name), str(meta.uid)), time.monotonic())
            return
        schedule.gone(str(meta.uid))
        # kopf starts watching only once the start-up handlers succeeded: the runners exist.
        runtime[kind].forget(str(meta.namespace), str(meta.name), str(meta.uid))
        if kind == "EventSourcedAggregate" and not deletes_topics(body.spec):
            name = (body.get("status") or {}).get("aggregateName") or body.metadata.name
            message = f"deletionPolicy Retain: kept the topics of {name}"
            kopf.event(body, type="Normal", reason="TopicsRetained", message=message)
            log.info("event", kind=kind, name=body.metadata.name, reason="TopicsRetained", message=message)

    @kopf.on.event(GROUP, VERSION, "eventsourcedaggregates", id="track", registry=registry)
    def aggregate_events(type: str | None, body: kopf.Body, **_: Any) -> None:
        track("EventSourcedAggregate", type, body)

    @kopf.on.event(GROUP, VERSION, "projections", id="track", registry=registry)
    def projection_events(type: str | None, body: kopf.Body, **_: Any) -> None:
        track("Projection", type, body)  # its Deployments go with it (owner references)

    @kopf.on.event(GROUP, VERSION, "policies", id="track", registry=registry)
    def policy_events(type: str | None, body: kopf.Body, **_: Any) -> None:
        # Its Deployment goes with it (owner references); its topics stay, as an aggregate's do by default.
        track("Policy", type, body)
        if type == "DELETED" and "policies" in runtime:
            runtime["policies"].forget(str(body.metadata.uid))

    return registry
