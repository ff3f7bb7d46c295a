"""Reconciling one EventSourcedAggregate: topics, then workloads, then status. Level-triggered.

Every pass recomputes everything from the spec and what it finds (Kafka, the API server), so running it
twice, or after a crash half-way, or from a second operator, ends in the same state. Workloads change
only after the topics were verified: a refused partition change leaves everything as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from foldline.errors import BrokerUnavailableError, ConfigurationError, KafkaAuthenticationError, TopicMismatchError
from foldline.topics import TopicNames, TopicReport, aggregate_topics, handler_group
from foldline_operator import autoscale, builders
from foldline_operator.builders import KafkaAuth, Owner
from foldline_operator.conditions import Condition, deployment_condition, from_status, ready
from foldline_operator.kafka import KafkaPort, client_config
from foldline_operator.kube import Kube, KubeError, SecretForbidden
from foldline_operator.scalers import autoscaling_condition, external_scalers
from foldline_operator.spec import AggregateResource, ProjectionResource

KIND = "EventSourcedAggregate"
PAUSED = "foldline.io/paused"
#: The StatefulSet fields that cannot change in place, as the API server names them when it refuses an
#: update ("spec.volumeClaimTemplates: ... field is immutable"; older servers: "spec: Forbidden: updates to
#: statefulset spec for fields other than ...").
IMMUTABLE_FIELDS = ("spec.volumeClaimTemplates", "spec.selector", "spec.serviceName", "spec.podManagementPolicy")


def immutable_change(message: str) -> bool:
    """Whether a 422 for a StatefulSet says a field that cannot change was changed."""
    if "updates to statefulset spec for fields other than" in message:
        return True
    return "field is immutable" in message and any(f"{field}:" in message for field in IMMUTABLE_FIELDS)


Obj = dict[str, Any]


@dataclass
class Outcome:
    """What one pass found: the status to write and the Events to post (type, reason, message)."""

    status: Obj
    conditions: list[Condition]
    events: list[tuple[str, str, str]] = field(default_factory=list)
    #: The spec reached the workloads this pass (not refused before them): it becomes the last applied one.
    applied: bool = False


def is_paused(meta: Mapping[str, Any]) -> bool:
    return str((meta.get("annotations") or {}).get(PAUSED, "")).lower() == "true"


def parse_time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def applied(kube: Kube, obj: Obj) -> tuple[str, str, str] | None:
    """Server-side apply; a Normal Event when the object was created or changed."""
    change = kube.apply_reporting(obj)
    if change is None:
        return None
    kind, name = obj["kind"], obj["metadata"]["name"]
    return ("Normal", f"{kind}{change.capitalize()}", f"{change} {kind} {name}")


def paused_outcome(status: Mapping[str, Any]) -> Outcome:
    """Paused: touch nothing, keep the last conditions, say so in Ready (observedGeneration stays)."""
    kept = [c for c in from_status(status.get("conditions")) if c.type != "Ready"]
    return Outcome({"paused": True}, [*kept, ready(kept, paused=True)])


@dataclass(frozen=True)
class Connection:
    config: dict[str, str]
    auth: KafkaAuth


def connect(kube: Kube, namespace: str, spec: AggregateResource) -> Connection | Condition:
    """The Kafka client config and Secret keys, or a failed TopicsReady when the Secret is missing."""
    if spec.kafka_secret is None:
        return Connection(client_config(spec.kafka_bootstrap, None), KafkaAuth())
    name = spec.kafka_secret.name
    try:
        data = kube.secret(namespace, name)
    except SecretForbidden:
        return Condition("TopicsReady", False, "KafkaSecretForbidden", secret_forbidden(namespace, name))
    if data is None:
        return Condition(
            "TopicsReady", False, "KafkaSecretMissing", f"Secret {name} (spec.kafka.secretRef) does not exist"
        )
    try:
        config = client_config(spec.kafka_bootstrap, data)
    except ConfigurationError as exc:  # the message names keys and settings, never a value
        return Condition("TopicsReady", False, "KafkaSecretInvalid", f"Secret {name}: {exc}")
    return Connection(config, KafkaAuth(name, frozenset(data)))


def secret_forbidden(namespace: str, name: str) -> str:
    return (
        f"the operator may not read Secret {name} in namespace {namespace}: its RBAC grants Secrets only in the "
        "namespaces it serves (docs/operator.md, Permissions)"
    )


def topics_condition(report: TopicReport) -> tuple[Condition, list[tuple[str, str, str]]]:
    events = [
        ("Normal", reason, f"{verb} topic {name}")
        for reason, verb, names in (
            ("TopicCreated", "created", report.created),
            ("TopicGrown", "grew the partitions of", report.grown),
            ("TopicReconfigured", "reconfigured", report.reconfigured),
        )
        for name in names
    ]
    total = len(report.created) + len(report.grown) + len(report.reconfigured) + len(report.unchanged)
    if report.replication:
        # Usable, so still True; the reason (and its one Warning Event, on the change) says what is off.
        found = ", ".join(f"{name}: {factor}" for name, factor in sorted(report.replication.items()))
        message = (
            f"{total} topics usable, but their replication factor differs from spec.replicationFactor ({found}); "
            "Kafka keeps it for existing topics: reassign their partitions, or declare what they have"
        )
        return Condition("TopicsReady", True, "ReplicationFactorDiffers", message), events
    return Condition("TopicsReady", True, "Verified", f"{total} topics match the spec"), events


class AggregateReconciler:
    def __init__(self, kube: Kube, kafka: KafkaPort) -> None:
        self.kube = kube
        self.kafka = kafka

    def reconcile(self, body: Mapping[str, Any], now: datetime | None = None) -> Outcome:
        now = now or datetime.now(UTC)
        meta, status = body["metadata"], dict(body.get("status") or {})
        owner = Owner(KIND, meta["name"], meta["uid"], meta["namespace"])
        generation = int(meta.get("generation", 0))
        if is_paused(meta):
            return paused_outcome(status)
        try:
            spec = AggregateResource.parse(owner.name, body["spec"])
        except (KeyError, ValueError) as exc:
            bad = Condition("TopicsReady", False, "InvalidSpec", str(exc))
            return Outcome({"observedGeneration": generation, "paused": False}, [bad, ready([bad])])
        names = TopicNames(spec.name)
        out: Obj = {
            "observedGeneration": generation,
            "paused": False,
            "aggregateName": spec.name,
            "topics": list(names.all()),
            "selector": builders.selector_string(builders.selector(owner.name, "command-handler")),
        }
        events: list[tuple[str, str, str]] = []

        connection = connect(self.kube, owner.namespace, spec)
        topics_ok = False
        # Unknown until read this pass: a lag from before Kafka went away would be a stale 0 (None removes it).
        out["lag"] = None
        if isinstance(connection, Condition):
            topics = connection
        else:
            topics, events, topics_ok = self._topics(connection, spec, out)
            if topics.reason not in ("KafkaUnavailable", "KafkaAuthenticationFailed"):  # same wait again
                out["lag"] = self._lag(connection, spec)

        rejected: Condition | None = None
        out["suspended"] = spec.suspend
        if topics_ok and isinstance(connection, Connection):
            if spec.suspend:  # the count to come back to stays in desiredReplicas
                desired = int(status.get("desiredReplicas", spec.replicas))
            else:
                desired = self._desired_replicas(spec, status, out.get("lag"), now, out)
            applied_events, rejected = self._apply_workloads(owner, spec, connection.auth, desired)
            events += applied_events
        else:  # nothing changes while the topics are refused or unreachable
            desired = int(status.get("desiredReplicas", spec.replicas))
        out["desiredReplicas"] = desired

        handler = self.kube.get("apps/v1", "StatefulSet", owner.namespace, builders.handler_name(owner.name))
        hstatus = (handler or {}).get("status") or {}
        out["replicas"] = int(hstatus.get("replicas") or 0)
        out["readyReplicas"] = int(hstatus.get("readyReplicas") or 0)
        wanted = int(((handler or {}).get("spec") or {}).get("replicas", desired))
        handlers = rejected or deployment_condition("HandlersReady", "command-handler", handler, wanted, "StatefulSet")
        if spec.suspend and rejected is None and wanted == 0:
            handlers = Condition(
                "HandlersReady", False, "Suspended", "spec.suspend: the command handlers are scaled to zero"
            )
        parts = [topics, handlers]
        if spec.gateway_enabled:
            gateway = self.kube.get("apps/v1", "Deployment", owner.namespace, builders.gateway_name(owner.name))
            parts.append(deployment_condition("GatewayReady", "gateway", gateway, spec.gateway_replicas))
        scalers = external_scalers(self.kube, owner.namespace, owner.name)
        scaling = autoscaling_condition(spec, meta, desired, scalers)
        extra = [scaling] if scaling is not None else []
        return Outcome(out, [*parts, *extra, ready(parts)], events, applied=topics_ok and rejected is None)

    def _topics(
        self, connection: Connection, spec: AggregateResource, out: Obj
    ) -> tuple[Condition, list[tuple[str, str, str]], bool]:
        specs = aggregate_topics(spec.name, spec.partitions, spec.replication_factor, spec.retention)
        try:
            report = self.kafka.ensure_topics(connection.config, specs, allow_growth=spec.allow_partition_growth)
        except TopicMismatchError as exc:
            out["partitions"] = self._present_partitions(connection, spec)
            return Condition("TopicsReady", False, exc.reason, str(exc)), [], False
        except KafkaAuthenticationError as exc:
            return Condition("TopicsReady", False, "KafkaAuthenticationFailed", str(exc)), [], False
        except BrokerUnavailableError as exc:
            return Condition("TopicsReady", False, "KafkaUnavailable", str(exc)), [], False
        out["partitions"] = spec.partitions
        condition, events = topics_condition(report)
        return condition, events, True

    def _present_partitions(self, connection: Connection, spec: AggregateResource) -> int | None:
        try:
            found = self.kafka.partitions(connection.config, [TopicNames(spec.name).commands])
        except BrokerUnavailableError:
            return None
        return found.get(TopicNames(spec.name).commands)

    def _lag(self, connection: Connection, spec: AggregateResource) -> int | None:
        try:
            return self.kafka.group_lag(connection.config, handler_group(spec.name), TopicNames(spec.name).commands)
        except BrokerUnavailableError:
            return None

    def _desired_replicas(
        self, spec: AggregateResource, status: Mapping[str, Any], lag: int | None, now: datetime, out: Obj
    ) -> int:
        if spec.autoscaling is None:
            return spec.replicas
        current = status.get("desiredReplicas")
        last = parse_time(status.get("lastScaleTime"))
        decision = autoscale.decide(
            None if current is None else int(current), lag, spec.autoscaling, spec.partitions, now, last
        )
        if decision.changed and decision.replicas != current:
            out["lastScaleTime"] = rfc3339(now)
        return decision.replicas

    def _apply_handlers(
        self, owner: Owner, spec: AggregateResource, auth: KafkaAuth, replicas: int
    ) -> tuple[list[tuple[str, str, str]], Condition | None]:
        """The handlers' Service, StatefulSet and PDB; a Deployment of an older operator is replaced.

        A StatefulSet's claim templates (storage size, class, emptyDir or not) and selector cannot change
        in place: when the API server refuses the change for that, the StatefulSet is deleted with its pods
        orphaned and created anew on the next pass; the new one adopts the running pods and rolls them
        onto the new template one at a time, each keeping its existing claim.
        """
        name = builders.handler_name(owner.name)
        events = [e for e in [applied(self.kube, builders.handler_service(owner, spec))] if e]
        statefulset = builders.handler_statefulset(owner, spec, auth, 0 if spec.suspend else replicas)
        current = self.kube.get("apps/v1", "StatefulSet", owner.namespace, name)
        if current is not None and current["metadata"].get("deletionTimestamp"):
            return events, Condition(
                "HandlersReady", False, "Progressing", f"StatefulSet {name} is being replaced (orphaning its pods)"
            )
        try:
            event = applied(self.kube, statefulset)
        except KubeError as exc:
            if exc.status != 422:
                raise
            if immutable_change(str(exc)):
                self.kube.delete("apps/v1", "StatefulSet", owner.namespace, name, propagation="Orphan")
                message = (
                    f"replacing StatefulSet {name}: its storage or selector changed (pods and claims are kept; "
                    "existing claims keep their size)"
                )
                return [*events, ("Normal", "StatefulSetReplaced", message)], Condition(
                    "HandlersReady", False, "Progressing", message
                )
            return events, Condition("HandlersReady", False, "WorkloadRejected", f"StatefulSet {name}: {exc}")
        events += [e for e in [event, applied(self.kube, builders.pdb(owner, statefulset))] if e]
        if self.kube.delete("apps/v1", "Deployment", owner.namespace, name):
            events.append(
                ("Normal", "DeploymentReplaced", f"deleted Deployment {name}: StatefulSet {name} replaces it")
            )
        return events, None

    def _apply_workloads(
        self, owner: Owner, spec: AggregateResource, auth: KafkaAuth, replicas: int
    ) -> tuple[list[tuple[str, str, str]], Condition | None]:
        events, rejected = self._apply_handlers(owner, spec, auth, replicas)
        wanted: list[Obj] = []
        gone: list[tuple[str, str, str]] = []
        gateway_name = builders.gateway_name(owner.name)
        if spec.gateway_enabled:
            gateway = builders.gateway_deployment(owner, spec, auth, self._views(owner, spec))
            wanted += [gateway, builders.gateway_service(owner, spec), builders.pdb(owner, gateway)]
        else:
            gone = [
                ("apps/v1", "Deployment", gateway_name),
                ("v1", "Service", gateway_name),
                ("policy/v1", "PodDisruptionBudget", gateway_name),
            ]
        events += [event for obj in wanted if (event := applied(self.kube, obj))]
        for api_version, kind, name in gone:
            if self.kube.delete(api_version, kind, owner.namespace, name):
                events.append(("Normal", f"{kind}Deleted", f"deleted {kind} {name}"))
        return events, rejected

    def _views(self, owner: Owner, spec: AggregateResource) -> builders.GatewayViews:
        """The Projections of this aggregate that share the first one's database, for the gateway."""
        paths: list[str] = []
        database: tuple[str, str] | None = None
        for item in self.kube.list("foldline.io/v1alpha1", "Projection", owner.namespace):
            try:
                projection = ProjectionResource.parse(item["metadata"]["name"], item.get("spec") or {})
            except (KeyError, ValueError):
                continue
            if projection.aggregate_ref != owner.name:
                continue
            here = (projection.database.name, projection.database.key)
            database = database or here
            if here == database:
                paths.append(projection.projector_path)
        return builders.GatewayViews(tuple(sorted(set(paths))), database)

    def finalize(self, body: Mapping[str, Any]) -> list[tuple[str, str, str]]:
        """On deletion: with ``Delete``, stop the workloads, then delete the topics; ``Retain`` keeps them."""
        meta = body["metadata"]
        spec = AggregateResource.parse(meta["name"], body["spec"])
        if spec.deletion_policy != "Delete":
            return [("Normal", "TopicsRetained", f"deletionPolicy Retain: kept the topics of {spec.name}")]
        self.kube.delete(
            "apps/v1", "StatefulSet", meta["namespace"], builders.handler_name(meta["name"]), propagation="Foreground"
        )
        self.kube.delete(
            "apps/v1", "Deployment", meta["namespace"], builders.gateway_name(meta["name"]), propagation="Foreground"
        )
        connection = connect(self.kube, meta["namespace"], spec)
        if isinstance(connection, Condition):
            raise BrokerUnavailableError(connection.message)
        deleted = self.kafka.delete_topics(connection.config, TopicNames(spec.name).all())
        return [("Normal", "TopicsDeleted", f"deletionPolicy Delete: deleted {', '.join(deleted) or 'no topics'}")]
