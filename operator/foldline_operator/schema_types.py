"""The building blocks of foldline's CRD schemas: typed fields, CEL rules and the patterns they share."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

# Kubernetes' own pattern for resource.Quantity strings ("500m", "1Gi", "2").
QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DURATION = r"^[0-9]+(ms|s|m|h|d)$"
IMPORT_PATH = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$"
TOPIC_PREFIX = r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$"
DNS_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def _obj(
    properties: dict[str, Schema],
    *,
    description: str = "",
    required: list[str] | None = None,
    default: dict[str, Any] | None = None,
    rules: list[dict[str, str]] | None = None,
) -> Schema:
    s: Schema = {"type": "object"}
    if description:
        s["description"] = description
    s["properties"] = properties
    if required:
        s["required"] = required
    if default is not None:
        s["default"] = default
    if rules:
        s["x-kubernetes-validations"] = rules
    return s


def _str(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description, **extra}


def _int(description: str, **extra: Any) -> Schema:
    return {"type": "integer", "format": "int32", "description": description, **extra}


def _bool(description: str, default: bool) -> Schema:
    return {"type": "boolean", "description": description, "default": default}


def _rule(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


def _secret_ref(description: str, default_key: str | None = None) -> Schema:
    props: dict[str, Schema] = {
        "name": _str("Name of a Secret in the resource's namespace.", pattern=DNS_NAME, maxLength=253)
    }
    if default_key is not None:
        props["key"] = _str("Key in the Secret.", default=default_key, minLength=1)
    return _obj(props, description=description, required=["name"])


def _quantities(description: str) -> Schema:
    return {
        "type": "object",
        "description": description,
        "additionalProperties": {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY,
            "x-kubernetes-int-or-string": True,
        },
    }


def _resources() -> Schema:
    return _obj(
        {
            "requests": _quantities("Minimum resources, e.g. cpu: 100m, memory: 256Mi."),
            "limits": _quantities("Maximum resources."),
        },
        description="Container resources, as in a Pod spec.",
    )
