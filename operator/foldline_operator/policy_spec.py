"""The ``Policy`` kind: its spec as a frozen dataclass and its OpenAPI schema (kept beside each other).

A Policy runs one policy worker (``foldline policy --policy module:Name``) for the policy class in the
image. It names its source aggregates by their EventSourcedAggregate resources in the same namespace:
the operator takes the Kafka connection and the events topics' partitions from them, so a Policy
repeats neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from foldline_operator.schema_types import (
    DURATION,
    IMPORT_PATH,
    TOPIC_PREFIX,
    Schema,
    _int,
    _obj,
    _resources,
    _rule,
    _str,
)
from foldline_operator.schemas import _conditions, _pod_options, _records, _root, _suspend
from foldline_operator.spec import DEFAULT_STORE, AggregateResource, PodOptions, duration_ms


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class PolicyResource:
    """A Policy's spec; ``name`` is the policy's name (its class's ``name``), which names its topics and group."""

    name: str
    policy_path: str
    sources: tuple[str, ...]
    image: str = ""
    pod_spec: Mapping[str, Any] = field(default_factory=dict)
    replicas: int = 1
    resources: Mapping[str, Any] = field(default_factory=dict)
    store_kind: str = DEFAULT_STORE
    replication_factor: int | None = None  # None: the first source aggregate's
    dead_letters_ms: int = duration_ms("30d")
    suspend: bool = False

    @classmethod
    def parse(cls, resource_name: str, spec: Mapping[str, Any]) -> PolicyResource:
        sources = tuple(str(s["name"]) for s in spec.get("sources") or () if isinstance(s, Mapping) and s.get("name"))
        if not sources:
            raise ValueError("spec.sources must name at least one EventSourcedAggregate")
        factor = spec.get("replicationFactor")
        return cls(
            name=str(spec.get("policyName") or resource_name),
            policy_path=str(spec["policy"]),
            sources=sources,
            image=str(spec.get("image") or ""),
            pod_spec=dict(spec),
            replicas=int(spec.get("replicas", 1)),
            resources=dict(_dict(spec.get("resources"))),
            store_kind=str(spec.get("storeKind", DEFAULT_STORE)),
            replication_factor=None if factor is None else int(factor),
            dead_letters_ms=duration_ms(str(_dict(spec.get("retention")).get("deadLetters", "30d"))),
            suspend=bool(spec.get("suspend", False)),
        )

    def pod(self, first_source: AggregateResource) -> PodOptions:
        """The worker's pod options: its own where given, else the first source aggregate's (as a
        Projection falls back on its aggregate's)."""
        own = PodOptions.parse(self.pod_spec, self.image or first_source.pod.image)
        return replace(
            own,
            image_pull_secrets=own.image_pull_secrets or first_source.pod.image_pull_secrets,
            service_account=own.service_account or first_source.pod.service_account,
            template=own.template or first_source.pod.template,
        )


def policy_schema() -> Schema:
    spec = _obj(
        {
            "policy": _str(
                "Import path of the Policy class in the image, e.g. foldline.examples.invoices:ChargeOnSend.",
                pattern=IMPORT_PATH,
            ),
            "policyName": _str(
                "The policy's name (its class's `name`), which names its state topics, dead letters and "
                "consumer group, and is a label value. Default: metadata.name.",
                pattern=TOPIC_PREFIX,
                maxLength=63,
            ),
            "sources": {
                "type": "array",
                "description": "The EventSourcedAggregates (same namespace) whose events the policy reads: the "
                "class's `sources`. Kafka and the events topics' partitions come from them.",
                "minItems": 1,
                "maxItems": 32,
                "items": _obj(
                    {"name": _str("Name of an EventSourcedAggregate in the same namespace.", minLength=1)},
                    required=["name"],
                ),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
            "image": _str("Container image (default: the first source aggregate's image)."),
            **_pod_options(),
            "replicas": _int(
                "Policy worker pods; at most one per source partition does work.", minimum=0, maximum=1000, default=1
            ),
            "resources": _resources(),
            "storeKind": _str("Local state store engine.", enum=["rocksdb", "lmdb", "sqlite"], default=DEFAULT_STORE),
            "replicationFactor": _int(
                "Replication factor of the policy's topics (default: the first source aggregate's).",
                minimum=1,
                maximum=32,
            ),
            "retention": _obj(
                {"deadLetters": _str("Retention of policy.<name>.dead-letters.", pattern=DURATION, default="30d")},
                description="Retention of the dead letters (the state topics are compacted).",
                default={},
            ),
            "suspend": _suspend(),
        },
        required=["policy", "sources"],
        rules=[
            _rule(
                "has(self.policyName) == has(oldSelf.policyName) && "
                "(!has(self.policyName) || self.policyName == oldSelf.policyName)",
                "spec.policyName is immutable: it names the policy's topics and consumer group",
                ".policyName",
            ),
        ],
    )
    status = _obj(
        {
            "observedGeneration": {"type": "integer", "format": "int64"},
            "conditions": _conditions(),
            "policyName": _str("The policy's name, the prefix of its topics."),
            "topics": {"type": "array", "items": {"type": "string"}, "description": "The topics the policy owns."},
            "consumerGroup": _str("The workers' consumer group."),
            "replicas": _int("Worker pods that exist."),
            "readyReplicas": _int("Worker pods that are ready."),
            "lag": {
                "type": "integer",
                "format": "int64",
                "description": "Source events the consumer group has not committed; absent while Kafka is unreachable.",
            },
            "scheduledDeadlines": {
                "type": "integer",
                "format": "int64",
                "description": "Deadlines pending in the committed state changelog; absent while unknown.",
            },
            "nextDeadline": _str("When the earliest pending deadline is due.", format="date-time"),
            "paused": {"type": "boolean"},
            "suspended": {"type": "boolean", "description": "spec.suspend is in effect."},
            **_records(),
        }
    )
    return _root(spec, status)
