"""The OpenAPI schemas of foldline's custom resources: structural, with defaults and CEL rules.

``crds.py`` wraps them into CustomResourceDefinitions; the API server validates every resource with them,
so a bad spec is refused at admission with the schema's message. The building blocks are in
``schema_types.py``, the pod fields (``env``, ``podTemplate``) in ``pod_schemas.py``.
"""

from __future__ import annotations

from foldline_operator.pod_schemas import _env, _pod_template
from foldline_operator.schema_types import (
    DURATION,
    IMPORT_PATH,
    QUANTITY,
    TOPIC_PREFIX,
    Schema,
    _bool,
    _int,
    _obj,
    _resources,
    _rule,
    _secret_ref,
    _str,
)
from foldline_operator.spec import DEFAULT_STORE


def _spec_record(description: str) -> Schema:
    return _obj(
        {
            "generation": {"type": "integer", "format": "int64"},
            "spec": _str("The spec, as JSON with sorted keys."),
        },
        description=description,
    )


def _records() -> dict[str, Schema]:
    return {
        "lastAppliedSpec": _spec_record("The spec the workloads were last built from."),
        "lastGoodSpec": _spec_record("The last spec that was Ready: what to go back to."),
    }


def _suspend() -> Schema:
    return _bool("Scale the workers (command handlers, projectors) to zero; false brings them back.", False)


def _conditions() -> Schema:
    condition = _obj(
        {
            "type": _str("TopicsReady, HandlersReady, GatewayReady, ProjectorReady or Ready."),
            "status": _str("True, False or Unknown.", enum=["True", "False", "Unknown"]),
            "reason": _str("One CamelCase word saying why."),
            "message": _str("What a person should know."),
            "lastTransitionTime": _str("When status last changed.", format="date-time"),
            "observedGeneration": {"type": "integer", "format": "int64"},
        },
        required=["type", "status"],
    )
    return {
        "type": "array",
        "items": condition,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    }


def _pod_options() -> dict[str, Schema]:
    return {
        "imagePullPolicy": _str("Image pull policy.", enum=["Always", "IfNotPresent", "Never"], default="IfNotPresent"),
        "imagePullSecrets": {
            "type": "array",
            "description": "Secrets to pull the image with.",
            "items": _obj({"name": _str("Secret name.")}, required=["name"]),
        },
        "serviceAccountName": _str("Service account of the pods (default: the namespace's default)."),
        "env": _env(),
        "podTemplate": _pod_template(),
    }


def aggregate_schema() -> Schema:
    autoscaling = _obj(
        {
            "minReplicas": _int("Never fewer handler pods than this.", minimum=1, default=1),
            "maxReplicas": _int("Never more than this (nor more than partitions).", minimum=1),
            "lagPerReplica": _int(
                "Commands of consumer lag one handler pod is expected to absorb.", minimum=1, default=1000
            ),
            "cooldownSeconds": _int("Scale down no sooner than this after the last change.", minimum=0, default=300),
        },
        description="Scale command handlers on consumer lag instead of a fixed replica count: "
        "replicas = clamp(ceil(lag / lagPerReplica), minReplicas, min(maxReplicas, partitions)).",
        required=["maxReplicas"],
        rules=[_rule("self.minReplicas <= self.maxReplicas", "autoscaling.minReplicas must not exceed maxReplicas")],
    )
    handlers = _obj(
        {
            "replicas": _int("Command-handler pods; at most one per partition does work.", minimum=0, default=1),
            "autoscaling": autoscaling,
            "standbyReplicas": _int(
                "Warm copies of each partition's store that other handler pods keep from the snapshots topic, so "
                "a failover restores only the tail (Kafka Streams' num.standby.replicas). A pod stands by for the "
                "partitions of the pods before it on a ring of pod names; with standbyReplicas >= replicas - 1 "
                "every pod holds every partition it does not own. 0: none.",
                minimum=0,
                maximum=100,
                default=0,
            ),
            "resources": _resources(),
            "storage": _obj(
                {
                    "volume": _str(
                        "persistentVolumeClaim: a claim per pod, kept across restarts and rolling updates (only "
                        "the changelog's tail is restored). emptyDir: gone with the pod (a full restore).",
                        enum=["persistentVolumeClaim", "emptyDir"],
                        default="persistentVolumeClaim",
                    ),
                    "size": {
                        "anyOf": [{"type": "integer"}, {"type": "string"}],
                        "x-kubernetes-int-or-string": True,
                        "pattern": QUANTITY,
                        "default": "1Gi",
                        "description": "Size of each pod's claim (or the emptyDir's size limit).",
                    },
                    "storageClassName": _str("StorageClass of the claims (default: the cluster's default)."),
                    "storeKind": _str(
                        "Local state store engine.", enum=["rocksdb", "lmdb", "sqlite"], default=DEFAULT_STORE
                    ),
                },
                description="The local state store of each handler pod.",
                default={},
            ),
        },
        description="The command-handler StatefulSet.",
        default={},
    )
    retention = _obj(
        {
            "commands": _str("Retention of <agg>.commands.", pattern=DURATION, default="7d"),
            "results": _str("Retention of <agg>.command-results.", pattern=DURATION, default="1h"),
            "deadLetters": _str("Retention of <agg>.dead-letters.", pattern=DURATION, default="30d"),
        },
        description="Retention of the topics not kept forever (events are kept forever, snapshots are "
        "compacted). Durations like 90m, 12h, 7d.",
        default={},
    )
    kafka = _obj(
        {
            "bootstrapServers": _str("host:port[,host:port...]", minLength=1),
            "secretRef": _secret_ref(
                "Optional Secret with keys security.protocol, sasl.mechanism, sasl.username, "
                "sasl.password and ca.crt (PEM), each optional."
            ),
        },
        description="How to reach Kafka.",
        required=["bootstrapServers"],
    )
    gateway = _obj(
        {
            "enabled": _bool("Run the HTTP gateway (Deployment and Service).", False),
            "replicas": _int("Gateway pods.", minimum=0, default=1),
            "tokenSecretRef": _secret_ref("Secret holding the bearer token clients must send.", default_key="token"),
            "resources": _resources(),
        },
        description="The HTTP gateway.",
        default={},
    )
    spec = _obj(
        {
            "aggregate": _str(
                "Import path of the Aggregate class in the image, e.g. foldline.examples.invoices:Invoices.",
                pattern=IMPORT_PATH,
            ),
            "aggregateName": _str(
                "The aggregate's name (its class's `name`), the prefix of its topics. Default: metadata.name.",
                pattern=TOPIC_PREFIX,
                maxLength=200,
            ),
            "image": _str("Container image holding foldline and the aggregate's code.", minLength=1),
            **_pod_options(),
            "partitions": _int(
                "Partitions of every topic of the aggregate; they can never shrink.",
                minimum=1,
                maximum=10000,
                **{
                    "x-kubernetes-validations": [
                        _rule("self >= oldSelf", "spec.partitions can never shrink: Kafka cannot remove partitions")
                    ]
                },
            ),
            "replicationFactor": _int("Replication factor of the topics.", minimum=1, maximum=32, default=3),
            "allowPartitionGrowth": _bool(
                "Allow growing partitions: this remaps aggregate ids to other partitions, "
                "so it needs this explicit opt-in.",
                False,
            ),
            "retention": retention,
            "kafka": kafka,
            "handlers": handlers,
            "gateway": gateway,
            "deletionPolicy": _str(
                "What deleting this resource does to its topics.", enum=["Retain", "Delete"], default="Retain"
            ),
            "suspend": _suspend(),
        },
        required=["aggregate", "image", "partitions", "kafka"],
        rules=[
            _rule(
                "self.handlers.replicas <= self.partitions",
                "spec.handlers.replicas must not exceed spec.partitions: a partition is the unit of parallelism",
                ".handlers.replicas",
            ),
            _rule(
                "!has(self.handlers.autoscaling) || self.handlers.autoscaling.maxReplicas <= self.partitions",
                "spec.handlers.autoscaling.maxReplicas must not exceed spec.partitions",
                ".handlers.autoscaling",
            ),
            _rule(
                "has(self.aggregateName) == has(oldSelf.aggregateName) && "
                "(!has(self.aggregateName) || self.aggregateName == oldSelf.aggregateName)",
                "spec.aggregateName is immutable: it names the topics",
                ".aggregateName",
            ),
        ],
    )
    status = _obj(
        {
            "observedGeneration": {"type": "integer", "format": "int64"},
            "conditions": _conditions(),
            "aggregateName": _str("The topic prefix in use."),
            "topics": {"type": "array", "items": {"type": "string"}},
            "partitions": _int("Partitions the topics have."),
            "replicas": _int("Command-handler pods (from the StatefulSet)."),
            "readyReplicas": _int("Command-handler pods that are ready."),
            "desiredReplicas": _int("Replicas the operator asks for (autoscaling included)."),
            "selector": _str("Label selector of the command-handler pods (for the scale subresource)."),
            "lag": {
                "type": "integer",
                "format": "int64",
                "description": "Commands not yet handled; absent while unknown (Kafka out of reach).",
            },
            "lastScaleTime": _str("When autoscaling last changed the replicas.", format="date-time"),
            "paused": {"type": "boolean"},
            "suspended": {"type": "boolean", "description": "spec.suspend is in effect."},
            **_records(),
        }
    )
    return _root(spec, status)


def projection_schema() -> Schema:
    spec = _obj(
        {
            "aggregateRef": _obj(
                {"name": _str("Name of the EventSourcedAggregate in the same namespace.", minLength=1)},
                required=["name"],
                rules=[_rule("self == oldSelf", "spec.aggregateRef is immutable")],
            ),
            "view": _str(
                "The view's name (the Projection class's `name`), which names its tables and its row in "
                "the projection catalog. Default: metadata.name.",
                pattern=r"^[a-z][a-z0-9-]{0,39}$",
            ),
            "source": _str(
                "Read the latest state (snapshots) or every change (events).",
                enum=["snapshots", "events"],
                default="snapshots",
            ),
            "projector": _str("Import path of the Projection class in the image.", pattern=IMPORT_PATH),
            "image": _str("Container image (default: the aggregate's image)."),
            **_pod_options(),
            "database": _obj(
                {"secretRef": _secret_ref("Secret with the database URL.", default_key="url")},
                description="Where the rows go.",
                required=["secretRef"],
            ),
            "replicas": _int("Projector pods per revision.", minimum=0, maximum=1000, default=1),
            "revision": _int(
                "The Projection class's revision (bump both to rebuild): a new projector replays the "
                "source into new tables while the old one keeps serving, then the view switches over.",
                minimum=1,
                default=1,
                **{
                    "x-kubernetes-validations": [
                        _rule("self >= oldSelf", "spec.revision can only grow: bump it to rebuild")
                    ]
                },
            ),
            "resources": _resources(),
            "suspend": _suspend(),
        },
        required=["aggregateRef", "projector", "database"],
        rules=[
            _rule(
                "self.source == oldSelf.source || self.revision > oldSelf.revision",
                "changing spec.source needs a rebuild: bump spec.revision too",
                ".source",
            ),
            _rule(
                "has(self.view) == has(oldSelf.view) && (!has(self.view) || self.view == oldSelf.view)",
                "spec.view is immutable: it names the view's tables",
                ".view",
            ),
        ],
    )
    status = _obj(
        {
            "observedGeneration": {"type": "integer", "format": "int64"},
            "conditions": _conditions(),
            "activeRevision": _int("The revision that serves reads."),
            "rebuild": _obj(
                {
                    "revision": _int("The revision being built."),
                    "progress": {"type": "number", "description": "Share of the source read (0..1)."},
                    "startedAt": _str("When the rebuild started.", format="date-time"),
                },
                description="Present while a new revision replays its source.",
            ),
            "progress": {"type": "number", "description": "Share of the source spec.revision has read (0..1)."},
            "lag": {"type": "integer", "format": "int64", "description": "Records the active revision is behind."},
            "paused": {"type": "boolean"},
            "suspended": {"type": "boolean", "description": "spec.suspend is in effect."},
            **_records(),
        }
    )
    return _root(spec, status)


#: Longest resource name: the names of owned objects append a suffix and go into 63-character labels.
MAX_NAME = 40


def _root(spec: Schema, status: Schema) -> Schema:
    return {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "required": ["spec"],
        "x-kubernetes-validations": [
            _rule(
                f"self.metadata.name.size() <= {MAX_NAME}",
                f"metadata.name must have at most {MAX_NAME} characters: it prefixes the names of owned objects",
            )
        ],
    }
