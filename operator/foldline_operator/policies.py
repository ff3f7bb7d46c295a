"""Reconciling one Policy: its source aggregates, its topics, its worker Deployment, then status.

Level-triggered as the other kinds. The sources are EventSourcedAggregates in the same namespace: each
must exist and have Ready topics; they give the Kafka connection (the first one's; all must name the same
bootstrap servers) and the partitions of the state topics (one compacted topic per source, as many
partitions as its events topic). Nothing is built until the sources are there, so a Policy naming a
missing aggregate waits with ``SourcesReady=False`` (``AggregateNotFound``) and touches nothing.

Status: ``lag`` is what the policy's consumer group has not committed of the sources' events topics;
``scheduledDeadlines`` and ``nextDeadline`` come from the committed state changelog
(``policy_deadlines``). Both are removed (unknown) while Kafka cannot be read, as an aggregate's lag is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from foldline.errors import BrokerUnavailableError, KafkaAuthenticationError, TopicMismatchError
from foldline.topics import PolicyTopics, Retention, TopicNames, policy_group, policy_topics
from foldline_operator.aggregates import (
    Connection,
    Outcome,
    applied,
    connect,
    is_paused,
    paused_outcome,
    rfc3339,
    topics_condition,
)
from foldline_operator.builders import Owner, pdb
from foldline_operator.conditions import Condition, deployment_condition, find, ready
from foldline_operator.crds import API_VERSION
from foldline_operator.kafka import KafkaPort
from foldline_operator.kube import Kube
from foldline_operator.policy_builders import policy_deployment, policy_worker_name
from foldline_operator.policy_deadlines import DeadlineReader
from foldline_operator.policy_spec import PolicyResource
from foldline_operator.spec import AggregateResource

KIND = "Policy"
Obj = dict[str, Any]


class PolicyReconciler:
    def __init__(self, kube: Kube, kafka: KafkaPort, deadlines: DeadlineReader | None = None) -> None:
        self.kube = kube
        self.kafka = kafka
        self.deadlines = deadlines or DeadlineReader(kafka.timeout)

    def reconcile(self, body: Mapping[str, Any]) -> Outcome:
        meta, status = body["metadata"], dict(body.get("status") or {})
        if is_paused(meta):
            return paused_outcome(status)
        owner = Owner(KIND, meta["name"], meta["uid"], meta["namespace"])
        out: Obj = {"observedGeneration": int(meta.get("generation", 0)), "paused": False}
        try:
            spec = PolicyResource.parse(owner.name, body["spec"])
        except (KeyError, ValueError) as exc:
            return _failed(out, Condition("SourcesReady", False, "InvalidSpec", str(exc)))
        names = PolicyTopics(spec.name)
        out.update(policyName=spec.name, consumerGroup=policy_group(spec.name), suspended=spec.suspend)
        # Unknown until read this pass (None removes them): a figure from before Kafka went away is stale.
        out.update(lag=None, scheduledDeadlines=None, nextDeadline=None)

        found = self._sources(owner, spec)
        if isinstance(found, Condition):
            return _failed(out, found)
        sources, connection = found
        sources_ok = Condition("SourcesReady", True, "Found", f"source aggregates: {', '.join(spec.sources)}")
        out["topics"] = [*(names.state(s.name) for s in sources), names.dead_letters]

        topics, events, topics_ok = self._topics(connection, spec, sources)
        if not topics_ok:
            return Outcome(out, [sources_ok, topics, ready([sources_ok, topics])], events)

        deployment = policy_deployment(owner, spec, sources[0], connection.auth)
        events += [e for obj in (deployment, pdb(owner, deployment)) if (e := applied(self.kube, obj))]
        current = self.kube.get("apps/v1", "Deployment", owner.namespace, policy_worker_name(owner.name))
        wstatus = (current or {}).get("status") or {}
        out["replicas"] = int(wstatus.get("replicas") or 0)
        out["readyReplicas"] = int(wstatus.get("readyReplicas") or 0)
        worker = deployment_condition("WorkerReady", "policy worker", current, 0 if spec.suspend else spec.replicas)
        if spec.suspend and worker.status is True:
            worker = Condition("WorkerReady", False, "Suspended", "spec.suspend: the policy worker is scaled to zero")

        self._figures(owner, spec, sources, connection, out)
        parts = [sources_ok, topics, worker]
        return Outcome(out, [*parts, ready(parts)], events, applied=True)

    def forget(self, uid: str) -> None:
        self.deadlines.forget(uid)

    def _sources(self, owner: Owner, spec: PolicyResource) -> tuple[list[AggregateResource], Connection] | Condition:
        sources: list[AggregateResource] = []
        for ref in spec.sources:
            esa = self.kube.get(API_VERSION, "EventSourcedAggregate", owner.namespace, ref)
            if esa is None:
                return Condition(
                    "SourcesReady",
                    False,
                    "AggregateNotFound",
                    f"EventSourcedAggregate {ref} (spec.sources) does not exist in {owner.namespace}",
                )
            topics = find((esa.get("status") or {}).get("conditions"), "TopicsReady")
            if topics is None or topics.get("status") != "True":
                return Condition("SourcesReady", False, "TopicsNotReady", f"the topics of {ref} are not ready yet")
            try:
                sources.append(AggregateResource.parse(esa["metadata"]["name"], esa["spec"]))
            except (KeyError, ValueError) as exc:
                return Condition("SourcesReady", False, "InvalidSource", f"EventSourcedAggregate {ref}: {exc}")
        bootstraps = {s.kafka_bootstrap for s in sources}
        if len(bootstraps) > 1 or len({s.kafka_secret for s in sources}) > 1:
            return Condition(
                "SourcesReady",
                False,
                "KafkaMismatch",
                "the source aggregates name different Kafka clusters or credentials; a policy's transaction "
                f"spans one cluster ({', '.join(sorted(bootstraps))})",
            )
        connection = connect(self.kube, owner.namespace, sources[0])
        if isinstance(connection, Condition):
            return Condition("SourcesReady", False, connection.reason, connection.message)
        return sources, connection

    def _topics(
        self, connection: Connection, spec: PolicyResource, sources: list[AggregateResource]
    ) -> tuple[Condition, list[tuple[str, str, str]], bool]:
        specs = policy_topics(
            spec.name,
            {s.name: s.partitions for s in sources},
            spec.replication_factor or sources[0].replication_factor,
            Retention(dead_letters_ms=spec.dead_letters_ms),
        )
        try:
            # Growth follows the sources': a state partition must exist for every events partition.
            report = self.kafka.ensure_topics(
                connection.config, specs, allow_growth=any(s.allow_partition_growth for s in sources)
            )
        except TopicMismatchError as exc:
            return Condition("TopicsReady", False, exc.reason, str(exc)), [], False
        except KafkaAuthenticationError as exc:
            return Condition("TopicsReady", False, "KafkaAuthenticationFailed", str(exc)), [], False
        except BrokerUnavailableError as exc:
            return Condition("TopicsReady", False, "KafkaUnavailable", str(exc)), [], False
        condition, events = topics_condition(report)
        return condition, events, True

    def _figures(
        self, owner: Owner, spec: PolicyResource, sources: list[AggregateResource], connection: Connection, out: Obj
    ) -> None:
        """Lag and deadlines into ``out``; each stays absent when Kafka does not answer for it."""
        group = policy_group(spec.name)
        with contextlib.suppress(BrokerUnavailableError):
            out["lag"] = sum(self.kafka.group_lag(connection.config, group, TopicNames(s.name).events) for s in sources)
        names = PolicyTopics(spec.name)
        try:
            offsets = {names.state(s.name): self.kafka.offsets(connection.config, names.state(s.name)) for s in sources}
            found = self.deadlines.read(owner.uid, connection.config, offsets)
        except BrokerUnavailableError:
            return
        out["scheduledDeadlines"] = found.count
        out["nextDeadline"] = rfc3339(found.earliest) if found.earliest is not None else None


def _failed(out: Obj, condition: Condition) -> Outcome:
    return Outcome(out, [condition, ready([condition])])
