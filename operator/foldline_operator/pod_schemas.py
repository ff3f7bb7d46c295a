"""Schemas of the pod fields of both kinds: ``env`` (with ``valueFrom``) and ``podTemplate``.

Typed where a mistake is common (selectors, tolerations, spread constraints, names), open where the Pod
API's own nesting is deep (affinity terms, volume sources): those pass to the Pod API as written.
"""

from __future__ import annotations

from foldline_operator.schema_types import DNS_NAME, QUANTITY, Schema, _int, _obj, _rule, _str

VALUE_SOURCES = ("secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef")


def _key_ref(what: str) -> Schema:
    return _obj(
        {
            "name": _str(f"Name of the {what}.", pattern=DNS_NAME, maxLength=253),
            "key": _str(f"Key in the {what}.", minLength=1),
            "optional": {"type": "boolean"},
        },
        required=["name", "key"],
    )


def _env() -> Schema:
    value_from = _obj(
        {
            "secretKeyRef": _key_ref("Secret"),
            "configMapKeyRef": _key_ref("ConfigMap"),
            "fieldRef": _obj(
                {"fieldPath": _str("e.g. metadata.name, status.podIP."), "apiVersion": _str("Default v1.")},
                required=["fieldPath"],
            ),
            "resourceFieldRef": _obj(
                {
                    "resource": _str("e.g. limits.memory."),
                    "containerName": _str("Default: this container."),
                    "divisor": {"x-kubernetes-int-or-string": True, "pattern": QUANTITY},
                },
                required=["resource"],
            ),
        },
        description="A value from a Secret, ConfigMap or the pod, as in a Pod spec.",
        rules=[
            _rule(
                " + ".join(f"(has(self.{k}) ? 1 : 0)" for k in VALUE_SOURCES) + " == 1",
                "valueFrom takes exactly one source",
            )
        ],
    )
    return {
        "type": "array",
        "description": "Extra environment variables (e.g. FOLDLINE_COMMIT_INTERVAL_MS), with value or valueFrom.",
        "items": _obj(
            {
                "name": _str("Variable name.", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$"),
                "value": _str("Value."),
                "valueFrom": value_from,
            },
            required=["name"],
            rules=[_rule("!(has(self.value) && has(self.valueFrom))", "an env entry has value or valueFrom, not both")],
        ),
        "maxItems": 256,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
    }


def _strings(description: str) -> Schema:
    return {"type": "object", "description": description, "additionalProperties": {"type": "string"}}


def _open(description: str, **properties: Schema) -> Schema:
    """An object whose known fields are typed and whose others pass to the Pod API as they are."""
    s: Schema = {"type": "object", "description": description, "x-kubernetes-preserve-unknown-fields": True}
    if properties:
        s["properties"] = properties
    return s


#: Volume names the operator's pods use themselves (``pods.RESERVED_VOLUMES``).
RESERVED_VOLUMES = ("tmp", "state", "kafka-ca")


def _pod_template() -> Schema:
    """``spec.podTemplate``: placement and decoration of the pods, typed where a mistake is common."""
    toleration = _obj(
        {
            "key": _str("Taint key (empty with Exists: every taint)."),
            "operator": _str("How key and value match.", enum=["Exists", "Equal"]),
            "value": _str("Taint value."),
            "effect": _str(
                "Taint effect (empty: every effect).", enum=["", "NoSchedule", "PreferNoSchedule", "NoExecute"]
            ),
            "tolerationSeconds": {"type": "integer", "format": "int64"},
        }
    )
    spread = _obj(
        {
            "maxSkew": _int("Largest allowed difference of pod counts between domains.", minimum=1),
            "topologyKey": _str("Node label naming the domains, e.g. topology.kubernetes.io/zone.", minLength=1),
            "whenUnsatisfiable": _str("What to do when no domain fits.", enum=["DoNotSchedule", "ScheduleAnyway"]),
            "labelSelector": _open("Pods counted; usually the workload's own labels."),
            "matchLabelKeys": {"type": "array", "items": {"type": "string"}},
            "minDomains": _int("Domains to spread over at least.", minimum=1),
            "nodeAffinityPolicy": _str("Honor or Ignore.", enum=["Honor", "Ignore"]),
            "nodeTaintsPolicy": _str("Honor or Ignore.", enum=["Honor", "Ignore"]),
        },
        required=["maxSkew", "topologyKey", "whenUnsatisfiable"],
    )
    volume = _open(
        "A volume as in a Pod spec (name and one source).", name=_str("Volume name.", pattern=DNS_NAME, maxLength=63)
    )
    volume["required"] = ["name"]
    mount = _obj(
        {
            "name": _str("A volume of podTemplate.spec.volumes."),
            "mountPath": _str("Where in the container.", pattern=r"^/.*"),
            "readOnly": {"type": "boolean"},
            "subPath": _str("Path within the volume."),
        },
        required=["name", "mountPath"],
    )
    reserved = ", ".join(RESERVED_VOLUMES)
    spec = _obj(
        {
            "nodeSelector": _strings("Node labels the pods must run on."),
            "tolerations": {"type": "array", "items": toleration, "maxItems": 64},
            "affinity": _obj(
                {
                    "nodeAffinity": _open("As in a Pod spec."),
                    "podAffinity": _open("As in a Pod spec."),
                    "podAntiAffinity": _open("As in a Pod spec."),
                },
                description="Replaces the default (command handlers: one per node where possible).",
            ),
            "topologySpreadConstraints": {
                "type": "array",
                "description": "Replaces the default (command handlers: spread over zones).",
                "items": spread,
                "maxItems": 16,
            },
            "priorityClassName": _str("PriorityClass of the pods."),
            "env": _env(),
            "volumes": {
                "type": "array",
                "items": volume,
                "maxItems": 64,
                "x-kubernetes-validations": [
                    _rule(
                        f"self.all(v, !(v.name in {list(RESERVED_VOLUMES)!r}))".replace("'", '"'),
                        f"volume names {reserved} are the operator's own",
                    )
                ],
            },
            "volumeMounts": {"type": "array", "items": mount, "maxItems": 64},
        },
        description="Added to every pod's spec (and its container, for env and volumeMounts).",
    )
    return _obj(
        {
            "metadata": _obj(
                {"labels": _strings("Added to the pods' labels."), "annotations": _strings("Added to the pods.")},
                description="The pods' labels and annotations (foldline's own labels win on a clash).",
            ),
            "spec": spec,
        },
        description="Where and how the pods run: labels, annotations, node selection, tolerations, affinity, "
        "spread, priority, env (valueFrom too) and extra volumes.",
    )
