"""``spec.handlers.standbyReplicas`` on the real API server: defaulted, bounds refused at admission, and the
operator hands it to the command-handler pods as ``FOLDLINE_STANDBY_REPLICAS``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from foldline_operator.kube import Kube
from tests.e2e.support import ESA, OperatorProcess, create, manifest
from tests.e2e.test_aggregate import statefulset
from tests.e2e.test_crds import PAUSED, esa_spec, rejected
from tests.e2e.test_statefulset import spec_for

pytestmark = pytest.mark.e2e


def handler_env(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    container = statefulset(kube, namespace, f"{name}-command-handler")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_standby_replicas_are_defaulted_bounded_and_reach_the_handler_pods(
    kube: Kube, operator: OperatorProcess, namespace: str, kafka_bootstrap: str, aggregate_name: Callable[[], str]
) -> None:
    created = create(kube, manifest(ESA, "standby-defaults", namespace, esa_spec(), **PAUSED))
    assert created["spec"]["handlers"]["standbyReplicas"] == 0
    error = rejected(
        kube, manifest(ESA, "standby-bad", namespace, esa_spec(handlers={"standbyReplicas": -1}), **PAUSED)
    )
    assert "spec.handlers.standbyReplicas" in error

    name = aggregate_name()
    create(
        kube,
        manifest(ESA, name, namespace, spec_for(name, kafka_bootstrap, handlers={"replicas": 2, "standbyReplicas": 1})),
    )
    assert handler_env(kube, namespace, name)["FOLDLINE_STANDBY_REPLICAS"] == "1"

    plain = aggregate_name()
    create(kube, manifest(ESA, plain, namespace, spec_for(plain, kafka_bootstrap)))
    assert "FOLDLINE_STANDBY_REPLICAS" not in handler_env(kube, namespace, plain)  # 0: unset, no roll
