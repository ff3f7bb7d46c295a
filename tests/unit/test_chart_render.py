"""The chart rendered by the real helm (offline: lint, template, show crds), with routine and wrong values."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.chart_support import DIGEST, REPO, ROUTINE, helm


def render(tmp_path: Path, values: dict[str, Any] | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    result = helm("template", "rel", values=values or {}, tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def only(objects: dict[tuple[str, str], dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [o for (k, _), o in objects.items() if k == kind]
    return found


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("values", [{}, ROUTINE], ids=["defaults", "routine"])
def test_helm_lint_accepts_the_defaults_and_routine_values(tmp_path: Path, values: dict[str, Any]) -> None:
    result = helm("lint", "--strict", values=values, tmp=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_defaults_render_a_pdb_for_the_two_replicas_and_no_network_policy(tmp_path: Path) -> None:
    objects = render(tmp_path)
    deployment = only(objects, "Deployment")
    assert deployment["metadata"]["name"] == "rel-foldline" and deployment["spec"]["replicas"] == 2
    pdb = only(objects, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    assert matches(pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"])
    assert not [k for k, _ in objects if k == "NetworkPolicy"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["containers"][0]["image"] == "foldline:0.1.0"


def test_routine_values_are_applied(tmp_path: Path) -> None:
    objects = render(tmp_path, ROUTINE)
    names = {
        name for kind, name in objects if kind not in ("ClusterKopfPeering", "ConfigMap", "CustomResourceDefinition")
    }
    assert names == {
        "platform-foldline",
        "platform-foldline-metrics",
        "platform-foldline-cluster",
        "platform-foldline-secrets",
    }, names
    deployment = objects[("Deployment", "platform-foldline")]
    template = deployment["spec"]["template"]
    pod, [container] = template["spec"], template["spec"]["containers"]
    assert container["image"] == f"registry.example.com/team/foldline@{DIGEST}"
    assert container["imagePullPolicy"] == "Always"
    assert template["metadata"]["labels"]["app.kubernetes.io/name"] == "fl"
    assert template["metadata"]["labels"]["cost-center"] == "cc-42"
    assert template["metadata"]["annotations"]["team.example.com/owner"] == "payments"
    for key in ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints", "priorityClassName"):
        assert pod[key] == ROUTINE[key], key
    # helm merges maps key by key: the routine keys win, the defaults' others stay (null drops one)
    assert pod["securityContext"] == {
        **ROUTINE["podSecurityContext"],
        "runAsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["securityContext"] == {**ROUTINE["securityContext"], "capabilities": {"drop": ["ALL"]}}
    assert pod["imagePullSecrets"] == [{"name": "pull"}]
    assert container["resources"] == ROUTINE["resources"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["HTTPS_PROXY"]["value"] == "http://proxy:3128" and "FOLDLINE_OPERATOR_PEERING" in env
    assert pod["serviceAccountName"] == "platform-foldline"

    pdb = objects[("PodDisruptionBudget", "platform-foldline")]
    assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]
    assert matches(pdb["spec"]["selector"]["matchLabels"], template["metadata"]["labels"])

    policy = objects[("NetworkPolicy", "platform-foldline")]["spec"]
    assert matches(policy["podSelector"]["matchLabels"], template["metadata"]["labels"])
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    [ingress] = policy["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert ingress["from"] == ROUTINE["networkPolicy"]["ingress"]["from"]
    egress = {(p["port"], p["protocol"]): rule.get("to") for rule in policy["egress"] for p in rule["ports"]}
    assert egress == {
        (6443, "TCP"): [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
        (9094, "TCP"): [{"namespaceSelector": {"matchLabels": {"name": "kafka"}}}],
        (5432, "TCP"): None,  # the defaults of what the routine values leave out
        (53, "TCP"): None,
        (53, "UDP"): None,
    }


def test_an_image_without_digest_uses_the_tag_and_the_image_registry(tmp_path: Path) -> None:
    values = {"image": {"registry": "mirror.local:5000", "repository": "foldline", "tag": "9.9"}}
    [container] = only(render(tmp_path, values), "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "mirror.local:5000/foldline:9.9"


def test_the_pdb_can_be_turned_off(tmp_path: Path) -> None:
    assert not [
        k for k, _ in render(tmp_path, {"podDisruptionBudget": {"enabled": False}}) if k == "PodDisruptionBudget"
    ]


def _with(path: str, value: Any) -> dict[str, Any]:
    values = copy.deepcopy(ROUTINE)
    *parents, last = path.split(".")
    node = values
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return values


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        ("resources.requests.cpu", "lots", "/resources/requests/cpu"),
        ("resources.limits.memory", "1 GB", "/resources/limits/memory"),
        ("replicaCount", "two", "/replicaCount"),
        ("image.digest", "latest", "/image/digest"),
        ("nameOverride", "Not_A_Name", "/nameOverride"),
        ("priorityClassName", 7, "/priorityClassName"),
        ("tolerations", [{"operator": "Maybe"}], "/tolerations/0/operator"),
        ("topologySpreadConstraints", [{"maxSkew": 1}], "/topologySpreadConstraints/0"),
        ("extraEnv", [{"value": "no name"}], "/extraEnv/0"),
        ("podDisruptionBudget.maxUnavailable", "half", "/podDisruptionBudget/maxUnavailable"),
        ("networkPolicy.enabled", "yes", "/networkPolicy/enabled"),
        ("networkPolicy.egress.kafka.ports", [0], "/networkPolicy/egress/kafka/ports/0"),
        ("networkPolicy.egress.kafka.to", [{"cidr": "10.0.0.0/8"}], "/networkPolicy/egress/kafka/to/0"),
        ("podSecurityContext.runAsUser", "root", "/podSecurityContext/runAsUser"),
        ("affinity.nodeAfinity", {}, "/affinity"),
    ],
)
def test_helm_refuses_wrong_values(tmp_path: Path, path: str, value: Any, error: str) -> None:
    for command in (("lint", "--strict"), ("template", "rel")):
        result = helm(*command, values=_with(path, value), tmp=tmp_path)
        output = result.stdout + result.stderr
        assert result.returncode != 0, f"helm {command[0]} accepted {path}={value!r}"
        assert "don't meet the specifications of the schema" in output and error in output, output


def test_the_crds_are_templates_kept_on_uninstall(tmp_path: Path) -> None:
    """foldline's CRDs are rendered (so `helm upgrade` upgrades them), equal to manifests/crds, and kept by
    `helm uninstall`; kopf's peering CRDs, which the chart's peering object needs first, stay in crds/."""
    objects = render(tmp_path, {})
    crds = {name: obj for (kind, name), obj in objects.items() if kind == "CustomResourceDefinition"}
    assert set(crds) == {"eventsourcedaggregates.foldline.io", "projections.foldline.io", "policies.foldline.io"}
    for name, crd in crds.items():
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        shipped = yaml.safe_load((REPO / "manifests" / "crds" / f"{name}.yaml").read_text())
        assert {k: v for k, v in crd.items() if k != "metadata"} == {
            k: v for k, v in shipped.items() if k != "metadata"
        }
    shown = helm("show", "crds", tmp=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert {d["metadata"]["name"] for d in yaml.safe_load_all(shown.stdout) if d} == {
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }
    assert not [k for k, _ in render(tmp_path, {"crds": {"install": False}}) if k == "CustomResourceDefinition"]
    unkept = render(tmp_path, {"crds": {"keep": False}})
    assert all(
        not obj["metadata"].get("annotations") for (k, _), obj in unkept.items() if k == "CustomResourceDefinition"
    )
