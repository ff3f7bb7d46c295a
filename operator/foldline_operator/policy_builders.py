"""The objects a Policy owns, built as plain dicts: no API calls, unit-tested as is.

The worker is a Deployment, not a StatefulSet as the command handlers are. Its state (per source
aggregate instance, small) lives on an emptyDir and is restored from the compacted state changelog at
each start; its transactional id carries the pod name, and zombie fencing comes from the consumer
group's metadata sent with every transaction (``send_offsets_to_transaction``), not from a stable id.
So a stable pod name and a claim would buy only a shorter restore, at the price of claims to manage.
"""

from __future__ import annotations

from foldline_operator.builders import (
    HTTP_PORT,
    STATE_DIR,
    KafkaAuth,
    Obj,
    Owner,
    _deployment,
    _kafka_volume,
    kafka_env,
)
from foldline_operator.pods import (
    container,
    labels,
    pod_spec,
    resources_with_defaults,
    selector,
    template_metadata,
    version_of,
)
from foldline_operator.policy_spec import PolicyResource
from foldline_operator.spec import AggregateResource

COMPONENT = "policy"
STATE_VOLUME = "state"


def policy_worker_name(resource: str) -> str:
    return f"{resource}-policy"


def policy_deployment(owner: Owner, spec: PolicyResource, first_source: AggregateResource, auth: KafkaAuth) -> Obj:
    """``foldline policy --policy module:Name``: reads the sources' events, writes commands, state and
    offsets in one transaction, in the consumer group ``foldline.policy.<name>``; the worker's settings
    (``foldline.settings.PolicySettings``) come from the env."""
    pod = spec.pod(first_source)
    env = [
        *kafka_env(first_source, auth),
        {"name": "FOLDLINE_STATE_DIR", "value": STATE_DIR},
        {"name": "FOLDLINE_STORE", "value": spec.store_kind},
        {"name": "FOLDLINE_HTTP_PORT", "value": str(HTTP_PORT)},
        {"name": "FOLDLINE_INSTANCE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "FOLDLINE_LOG_FORMAT", "value": "json"},
    ]
    ca_volumes, ca_mounts = _kafka_volume(auth)
    main = container(
        COMPONENT,
        pod,
        ["foldline", "policy", "--policy", spec.policy_path],
        env,
        HTTP_PORT,
        resources_with_defaults(COMPONENT, spec.resources),
        [{"name": STATE_VOLUME, "mountPath": STATE_DIR}, *ca_mounts],
    )
    extra = {"foldline.io/policy": spec.name}
    # foldline.io/aggregate names the first source (a label holds one value).
    object_labels = labels(owner.name, COMPONENT, first_source.name, version_of(pod.image), **extra)
    match = selector(owner.name, COMPONENT)
    volumes = [{"name": STATE_VOLUME, "emptyDir": {}}, *ca_volumes]
    return _deployment(
        policy_worker_name(owner.name),
        owner,
        object_labels,
        match,
        0 if spec.suspend else spec.replicas,
        template_metadata(pod, object_labels, HTTP_PORT),
        pod_spec(pod, main, volumes, grace=60, spread=match),
    )
