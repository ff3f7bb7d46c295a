"""Conditions, status patches, Events and spec parsing: the operator's pure decisions."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from foldline.errors import BrokerUnavailableError, ConfigurationError, TopicMismatchError
from foldline.topics import DAY_MS
from foldline_operator.aggregates import Outcome, paused_outcome
from foldline_operator.conditions import Condition, deployment_condition, merge, ready
from foldline_operator.config import OperatorConfig, parse_args
from foldline_operator.handlers import kopf_error, status_patch, transition_events
from foldline_operator.kafka import client_config
from foldline_operator.projections import rebuild_status
from foldline_operator.spec import AggregateResource, duration_ms

NOW = "2026-11-27T12:00:00Z"


def deployment(generation: int = 2, observed: int = 2, available: int = 3, updated: int = 3) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "status": {"observedGeneration": observed, "availableReplicas": available, "updatedReplicas": updated},
    }


def test_deployment_condition() -> None:
    assert deployment_condition("HandlersReady", "h", None, 1).reason == "DeploymentMissing"
    assert deployment_condition("HandlersReady", "h", deployment(observed=1), 3).reason == "Progressing"
    assert deployment_condition("HandlersReady", "h", deployment(available=2), 3).status is False
    assert deployment_condition("HandlersReady", "h", deployment(), 3).status is True
    assert deployment_condition("HandlersReady", "h", deployment(available=0), 0).reason == "ScaledToZero"
    missing = deployment_condition("HandlersReady", "h", None, 1, "StatefulSet")
    assert (missing.reason, missing.message) == ("StatefulSetMissing", "the h StatefulSet does not exist yet")
    sts = {**deployment(observed=1), "kind": "StatefulSet"}
    assert "StatefulSet's newest spec" in deployment_condition("HandlersReady", "h", sts, 3).message


def test_suspended_is_its_own_ready_reason() -> None:
    suspended = Condition("HandlersReady", False, "Suspended", "scaled to zero")
    assert ready([Condition("TopicsReady", True, "Verified"), suspended]).reason == "Suspended"
    [(kind, reason, _)] = transition_events({}, [suspended])
    assert (kind, reason) == ("Normal", "Suspended")  # an expected state, not a fault


def test_ready_is_the_conjunction_and_names_the_first_failure() -> None:
    ok = Condition("TopicsReady", True, "Verified")
    bad = Condition("HandlersReady", False, "Progressing", "0/1 pods")
    assert ready([ok]).status is True
    failed = ready([ok, bad])
    assert (failed.status, failed.reason, failed.message) == (False, "HandlersNotReady", "HandlersReady: 0/1 pods")
    assert ready([Condition("TopicsReady", None, "")]).reason == "TopicsReadyUnknown"
    assert ready([ok], paused=True).reason == "Paused"


def test_merge_keeps_transition_times_while_the_status_holds() -> None:
    first = merge(None, [Condition("TopicsReady", True, "Verified")], "t1", 1)
    same = merge(first, [Condition("TopicsReady", True, "Verified", "new message")], "t2", 2)
    flipped = merge(same, [Condition("TopicsReady", False, "PartitionShrinkRefused")], "t3", 3)
    assert [c["lastTransitionTime"] for c in (first[0], same[0], flipped[0])] == ["t1", "t1", "t3"]
    assert same[0]["observedGeneration"] == 2 and flipped[0]["status"] == "False"


def test_a_replication_factor_difference_is_reported_once_as_a_warning() -> None:
    from foldline.topics import TopicReport
    from foldline_operator.aggregates import topics_condition

    condition, _ = topics_condition(TopicReport(unchanged=["a.commands"], replication={"a.commands": 1}))
    assert (condition.status, condition.reason) == (True, "ReplicationFactorDiffers")
    assert "a.commands: 1" in condition.message
    [(kind, reason, _)] = transition_events({}, [condition])
    assert (kind, reason) == ("Warning", "ReplicationFactorDiffers")
    assert topics_condition(TopicReport(unchanged=["a.commands"]))[0].reason == "Verified"


def test_immutable_statefulset_changes_are_told_from_other_refusals() -> None:
    from foldline_operator.aggregates import immutable_change

    claim = 'StatefulSet.apps "x" is invalid: spec.volumeClaimTemplates: Invalid value: [...]: field is immutable'
    assert immutable_change(claim)
    assert immutable_change("spec: Forbidden: updates to statefulset spec for fields other than 'replicas' ...")
    assert not immutable_change('StatefulSet.apps "x" is invalid: spec.template.spec.priorityClassName: Invalid value')


def test_spec_records_follow_what_was_applied_and_what_was_ready() -> None:
    from foldline_operator.handlers import spec_records

    spec = {"partitions": 3, "image": "x"}
    good = Outcome({}, [Condition("Ready", True, "Ready")], applied=True)
    records = spec_records(good, spec, 7)
    assert (
        records["lastAppliedSpec"]
        == records["lastGoodSpec"]
        == {
            "generation": 7,
            "spec": '{"image":"x","partitions":3}',
        }
    )
    progressing = Outcome({}, [Condition("Ready", False, "HandlersNotReady")], applied=True)
    assert set(spec_records(progressing, spec, 8)) == {"lastAppliedSpec"}
    refused = Outcome({}, [Condition("Ready", False, "TopicsNotReady")])
    assert spec_records(refused, spec, 9) == {}


def test_a_scale_write_under_autoscaling_is_named_and_ignored() -> None:
    from foldline_operator.scalers import autoscaling_condition

    raw = {"aggregate": "a:B", "image": "i", "partitions": 6, "kafka": {"bootstrapServers": "k:1"}}
    auto = AggregateResource.parse("x", {**raw, "handlers": {"replicas": 5, "autoscaling": {"maxReplicas": 3}}})
    scaled = {"managedFields": [{"manager": "kubectl", "operation": "Update", "subresource": "scale"}]}
    ignored = autoscaling_condition(auto, scaled, 2, [])
    assert ignored is not None and ignored.reason == "ScaleIgnored"
    assert "by kubectl" in ignored.message and "2 replicas from the lag" in ignored.message
    [(kind, _, _)] = transition_events({}, [ignored])
    assert kind == "Warning"
    plain = autoscaling_condition(auto, {"managedFields": [{"manager": "kubectl", "operation": "Update"}]}, 2, [])
    assert plain is not None and plain.reason == "Active"
    assert autoscaling_condition(AggregateResource.parse("x", raw), scaled, 1, []) is None  # by hand: the scale wins


def test_an_hpa_or_scaled_object_beside_autoscaling_is_named_and_loses() -> None:
    from foldline_operator.scalers import aims_at, autoscaling_condition

    raw = {"aggregate": "a:B", "image": "i", "partitions": 6, "kafka": {"bootstrapServers": "k:1"}}
    auto = AggregateResource.parse("x", {**raw, "handlers": {"autoscaling": {"maxReplicas": 3}}})
    scaled = {"managedFields": [{"manager": "kubectl", "operation": "Update", "subresource": "scale"}]}
    conflict = autoscaling_condition(auto, scaled, 2, ["HorizontalPodAutoscaler h"])
    assert conflict is not None and conflict.reason == "AutoscalerConflict"  # names the object, not a manager
    assert "HorizontalPodAutoscaler h" in conflict.message and "autoscaling wins: 2 replicas" in conflict.message
    [(kind, _, _)] = transition_events({}, [conflict])
    assert kind == "Warning"
    external = autoscaling_condition(AggregateResource.parse("x", raw), {}, 1, ["ScaledObject s"])
    assert external is not None and external.reason == "External" and "ScaledObject s" in external.message
    [(kind, _, _)] = transition_events({}, [external])
    assert kind == "Normal"

    def scaler(ref: dict[str, str]) -> dict[str, Any]:
        return {"spec": {"scaleTargetRef": ref}}

    assert aims_at(scaler({"apiVersion": "foldline.io/v1alpha1", "kind": "EventSourcedAggregate", "name": "x"}), "x")
    assert not aims_at(
        scaler({"apiVersion": "foldline.io/v1alpha1", "kind": "EventSourcedAggregate", "name": "y"}), "x"
    )
    assert not aims_at(scaler({"kind": "EventSourcedAggregate", "name": "x"}), "x")  # KEDA's default: apps/v1
    assert not aims_at(scaler({"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"}), "x")


def test_unknown_lag_removes_a_stale_one() -> None:
    outcome = Outcome({"observedGeneration": 4, "lag": None}, [Condition("Ready", True, "Ready", "fine")])
    assert status_patch({"lag": 0, "observedGeneration": 4}, outcome, 4, NOW)["lag"] is None  # merge patch: delete
    assert "lag" not in status_patch({"observedGeneration": 4}, outcome, 4, NOW)


def test_status_patch_writes_only_differences() -> None:
    outcome = Outcome({"observedGeneration": 4, "lag": 0}, [Condition("Ready", True, "Ready", "fine")])
    first = status_patch({}, outcome, 4, NOW)
    assert set(first) == {"observedGeneration", "lag", "conditions"}
    assert status_patch(first, outcome, 4, "later") == {}


def test_transition_events_only_for_changes() -> None:
    current = {"conditions": merge(None, [Condition("TopicsReady", True, "Verified")], NOW, 1)}
    assert transition_events(current, [Condition("TopicsReady", True, "Verified", "other text")]) == []
    [(kind, reason, message)] = transition_events(
        current, [Condition("TopicsReady", False, "PartitionShrinkRefused", "cannot shrink")]
    )
    assert (kind, reason, message) == ("Warning", "PartitionShrinkRefused", "TopicsReady: cannot shrink")


def test_paused_keeps_conditions_and_generation() -> None:
    status = {
        "observedGeneration": 3,
        "conditions": merge(
            None, [Condition("TopicsReady", True, "Verified"), Condition("Ready", True, "Ready")], NOW, 3
        ),
    }
    outcome = paused_outcome(status)
    assert outcome.status == {"paused": True}
    assert [(c.type, c.reason) for c in outcome.conditions] == [("TopicsReady", "Verified"), ("Ready", "Paused")]


def test_rebuild_start_time_survives_passes() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    first = rebuild_status(None, 2, 0.0, now)
    later = rebuild_status(first, 2, 0.5, now.replace(hour=13))
    assert later == {"revision": 2, "progress": 0.5, "startedAt": "2026-11-27T12:00:00Z"}
    assert rebuild_status(later, 3, 0.0, now.replace(hour=14))["startedAt"] == "2026-11-27T14:00:00Z"


def test_spec_parsing_and_durations() -> None:
    assert [duration_ms(t) for t in ("500ms", "30s", "90m", "12h", "7d")] == [
        500,
        30_000,
        5_400_000,
        43_200_000,
        7 * DAY_MS,
    ]
    with pytest.raises(ValueError):
        duration_ms("7 days")
    spec = AggregateResource.parse(
        "res",
        {
            "aggregate": "m:A",
            "image": "i",
            "partitions": 2,
            "kafka": {"bootstrapServers": "k:1"},
            "aggregateName": "orders",
            "handlers": {"autoscaling": {"maxReplicas": 2}},
        },
    )
    assert spec.name == "orders" and spec.replication_factor == 3 and spec.deletion_policy == "Retain"
    assert spec.autoscaling is not None and spec.autoscaling.lag_per_replica == 1000
    assert spec.retention.results_ms == 3_600_000


def test_kafka_client_config_from_the_secret() -> None:
    secret = {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u",
        "sasl.password": "p",
        "ca.crt": "-----BEGIN CERTIFICATE-----",
        "unrelated": "x",
    }
    assert client_config("k:9093", secret) == {
        "bootstrap.servers": "k:9093",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u",
        "sasl.password": "p",
        "ssl.ca.pem": "-----BEGIN CERTIFICATE-----",
    }


def test_operator_config_from_env_and_flags() -> None:
    env = {
        "FOLDLINE_OPERATOR_RESYNC_SECONDS": "5",
        "FOLDLINE_OPERATOR_NAMESPACES": "a, b",
        "FOLDLINE_OPERATOR_PRIORITY": "7",
        "FOLDLINE_HTTP_PORT": "9000",
    }
    config = OperatorConfig.from_env(env)
    assert (config.resync_seconds, config.namespaces, config.priority, config.http_port) == (5.0, ("a", "b"), 7, 9000)
    flagged, fmt = parse_args(["--namespace", "c", "--priority", "9", "--log-format", "json"], env)
    assert (flagged.namespaces, flagged.priority, flagged.resync_seconds, fmt) == (("c",), 9, 5.0, "json")
    assert OperatorConfig.from_env({}).priority > 0  # random, so replicas differ


def _view(active: int | None, revisions: list[tuple[int, str, float]], source: str = "snapshots") -> Any:
    from foldline.projection.status import RevisionStatus, ViewStatus

    revs = tuple(RevisionStatus(r, state, source, "agg.snapshots", 0, progress, {}) for r, state, progress in revisions)
    building = max((r for r, state, _ in revisions if state == "building"), default=None)
    return ViewStatus("list", "agg", active, building, 0, None, revs)


def _projection(revision: int, source: str = "snapshots") -> Any:
    from foldline_operator.spec import ProjectionResource

    return ProjectionResource.parse(
        "list",
        {
            "aggregateRef": {"name": "agg"},
            "projector": "m:P",
            "revision": revision,
            "source": source,
            "database": {"secretRef": {"name": "db"}},
        },
    )


def test_revision_state_through_a_rebuild() -> None:
    from datetime import UTC, datetime

    from foldline_operator.projections import revision_state

    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    out: dict[str, Any] = {}
    condition, retire = revision_state(_projection(1), None, {}, now, out)
    assert (condition.reason, retire, out) == ("Registering", False, {})

    out = {}
    condition, retire = revision_state(_projection(2), _view(1, [(1, "active", 1.0)]), {}, now, out)
    assert (condition.reason, retire) == ("Rebuilding", False)
    assert out["rebuild"] == {"revision": 2, "progress": 0.0, "startedAt": "2026-11-27T12:00:00Z"}
    assert out["activeRevision"] == 1

    out = {}
    view = _view(1, [(1, "active", 1.0), (2, "building", 0.37)])
    condition, retire = revision_state(_projection(2), view, {"rebuild": {"revision": 2, "startedAt": "t0"}}, now, out)
    assert (condition.reason, retire, out["progress"]) == ("Rebuilding", False, 0.37)
    assert out["rebuild"] == {"revision": 2, "progress": 0.37, "startedAt": "t0"}

    out = {}
    condition, retire = revision_state(_projection(2), _view(2, [(2, "active", 1.0)]), {}, now, out)
    assert (condition.status, condition.reason, retire) == (True, "Active", True)
    assert out["rebuild"] is None and out["activeRevision"] == 2


def test_revision_state_refuses_mismatches() -> None:
    from datetime import UTC, datetime

    from foldline_operator.projections import revision_state

    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    wrong = _view(1, [(1, "active", 1.0), (3, "building", 0.5)])
    assert revision_state(_projection(2), wrong, {}, now, {})[0].reason == "RevisionMismatch"
    events = _view(1, [(1, "active", 1.0)], source="events")
    assert revision_state(_projection(1), events, {}, now, {})[0].reason == "SourceMismatch"


def test_permanent_errors_wait_for_a_change_the_rest_retry() -> None:
    shrink = kopf_error(TopicMismatchError("a.commands has 4 partitions", reason="PartitionShrinkRefused"))
    assert isinstance(shrink, kopf.PermanentError) and "TopicMismatchError: a.commands" in str(shrink)
    assert isinstance(kopf_error(ConfigurationError("no bootstrap servers")), kopf.PermanentError)
    away = kopf_error(BrokerUnavailableError("timed out"))
    assert isinstance(away, kopf.TemporaryError) and away.delay == 10
    assert isinstance(kopf_error(RuntimeError("a bug")), kopf.TemporaryError)


def test_kafka_client_config_defaults_and_refusals() -> None:
    secret = {"security.protocol": "SASL_SSL", "sasl.username": "u", "sasl.password": "s3cr3t-pw"}
    config = client_config("k:9093", secret)
    assert config["security.protocol"] == "sasl_ssl" and config["sasl.mechanism"] == "SCRAM-SHA-512"
    for bad, reason in (
        ({"sasl.username": "u", "sasl.password": "s3cr3t-pw"}, "never sends them"),
        ({"security.protocol": "sasl_ssl", "sasl.password": "s3cr3t-pw"}, "needs"),
        ({"security.protocol": "plaintext", "ca.crt": "-----BEGIN"}, "ca.crt"),
        ({**secret, "sasl.mechanism": "GSSAPI"}, "MECHANISM"),
    ):
        with pytest.raises(ConfigurationError, match=reason) as error:
            client_config("k:9093", bad)
        assert "s3cr3t-pw" not in str(error.value)
