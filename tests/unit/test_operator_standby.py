"""``spec.handlers.standbyReplicas``: from the CRD through the spec to the handler pods' environment."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from foldline.settings import HandlerSettings
from foldline_operator import builders, schemas
from foldline_operator.builders import KafkaAuth, Owner
from foldline_operator.spec import AggregateResource

OWNER = Owner("EventSourcedAggregate", "invoices", "uid-1", "shop")
RAW: dict[str, Any] = {
    "aggregate": "shop.domain:Invoices",
    "image": "registry/shop:1.2",
    "partitions": 6,
    "kafka": {"bootstrapServers": "kafka:9092"},
    "handlers": {"replicas": 3, "standbyReplicas": 1},
}


def env_of(statefulset: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in builders.container_of(statefulset)["env"]}


def test_standby_replicas_reach_the_handler_pods_as_the_setting_they_read() -> None:
    spec = AggregateResource.parse("invoices", RAW)
    assert spec.standby_replicas == 1
    env = env_of(builders.handler_statefulset(OWNER, spec, KafkaAuth(), replicas=3))
    assert env["FOLDLINE_STANDBY_REPLICAS"] == "1"
    assert (
        HandlerSettings.from_env({"FOLDLINE_STANDBY_REPLICAS": env["FOLDLINE_STANDBY_REPLICAS"]}).standby_replicas == 1
    )


def test_none_by_default_and_then_the_pods_do_not_change() -> None:
    spec = AggregateResource.parse("invoices", {**RAW, "handlers": {"replicas": 3}})
    assert spec.standby_replicas == 0
    # Unset rather than "0": StatefulSets made before the field existed keep their pod template (no roll).
    assert "FOLDLINE_STANDBY_REPLICAS" not in env_of(builders.handler_statefulset(OWNER, spec, KafkaAuth(), 3))
    assert (
        env_of(builders.handler_statefulset(OWNER, replace(spec, standby_replicas=2), KafkaAuth(), 3))[
            "FOLDLINE_STANDBY_REPLICAS"
        ]
        == "2"
    )


def test_the_crd_field() -> None:
    spec = schemas.aggregate_schema()["properties"]["spec"]["properties"]
    field = spec["handlers"]["properties"]["standbyReplicas"]
    assert (field["type"], field["default"], field["minimum"]) == ("integer", 0, 0)
