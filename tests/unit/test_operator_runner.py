"""The operator's pass runner and a deletion that arrives while a pass of the same resource runs."""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import generate_latest

from foldline_operator.aggregates import Outcome
from foldline_operator.backoff import Backoff
from foldline_operator.conditions import Condition
from foldline_operator.handlers import Locks, Runner

OBJ = {"metadata": {"uid": "u-1", "namespace": "ns", "name": "racing", "generation": 1}, "spec": {}, "status": {}}


class Kube:
    """The API server as a pass sees it: the object while it exists, then nothing."""

    def __init__(self) -> None:
        self.exists = True

    def get(self, api: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return OBJ if self.exists else None

    def patch_status(self, *args: Any) -> None:
        pass

    def event(self, *args: Any) -> None:
        pass


def exported() -> str:
    return generate_latest().decode()


def test_a_deletion_during_a_pass_leaves_no_series_behind() -> None:
    kube = Kube()
    reading, release = threading.Event(), threading.Event()

    def reconcile(fresh: Any) -> Outcome:
        reading.set()
        assert release.wait(10)
        return Outcome(status={}, conditions=[Condition("Ready", False, "HandlersNotReady")])

    runner = Runner("EventSourcedAggregate", kube, reconcile, Locks(), Backoff(10.0, 300.0))  # type: ignore[arg-type]
    passing = threading.Thread(target=runner, args=(OBJ,))
    passing.start()
    assert reading.wait(10)  # the pass read the object: it still exists
    kube.exists = False
    forgetting = threading.Thread(target=runner.forget, args=("ns", "racing", "u-1"))
    forgetting.start()
    forgetting.join(0.2)
    assert forgetting.is_alive()  # waits for the pass that read the object
    release.set()  # the pass reports the resource not Ready...
    passing.join(10)
    forgetting.join(10)
    assert not passing.is_alive() and not forgetting.is_alive()
    assert 'resource_name="racing"' not in exported()  # ...and the deletion removed that report
    runner({"metadata": OBJ["metadata"]})  # a later pass finds it gone and reports nothing
    assert 'resource_name="racing"' not in exported()
