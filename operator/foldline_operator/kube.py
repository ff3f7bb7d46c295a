"""A small, untyped Kubernetes REST client: dicts in, dicts out, server-side apply for what we own.

It rides on the ``kubernetes`` package only for configuration (kubeconfig or in-cluster, token refresh,
TLS) and its HTTP transport; the objects stay plain dicts, as the builders make them.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

FIELD_MANAGER = "foldline-operator"
log = structlog.get_logger("foldline.operator")

Obj = dict[str, Any]


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class SecretForbidden(KubeError):
    """The operator's RBAC does not let it read this Secret (a namespace it does not serve for Secrets)."""


def load_config() -> None:
    """In a pod: the service account; elsewhere: ``$KUBECONFIG`` or ``~/.kube/config``."""
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()  # type: ignore[no-untyped-call]


def path(
    api_version: str, kind: str, namespace: str | None, name: str | None = None, subresource: str | None = None
) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    # Every kind foldline touches pluralizes regularly (deployments, poddisruptionbudgets, projections...),
    # or ends in -y (policies).
    lower = kind.lower()
    plural = lower[:-1] + "ies" if lower.endswith("y") else lower + "s"
    out = base + (f"/namespaces/{namespace}" if namespace else "") + f"/{plural}"
    if name:
        out += f"/{name}"
    if subresource:
        out += f"/{subresource}"
    return out


class Kube:
    def __init__(self, api: Any = None, timeout: float = 30.0) -> None:
        self.api = api or k8s_client.ApiClient()
        self.timeout = timeout

    def request(
        self,
        method: str,
        url_path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Obj | None:
        """The decoded response; None for 404; ``KubeError`` for any other failure."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        _, url, headers, body, _ = self.api.param_serialize(
            method,
            url_path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(method, url, header_params=headers, body=body, _request_timeout=self.timeout)
        data = response.read()
        if response.status == 404:
            return None
        if not 200 <= response.status < 300:
            try:
                message = json.loads(data).get("message", data)
            except ValueError:
                message = data.decode(errors="replace")
            raise KubeError(response.status, str(message))
        decoded: Obj = json.loads(data) if data else {}
        return decoded

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        return self.request("GET", path(api_version, kind, namespace, name))

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str = "") -> list[Obj]:
        query = {"labelSelector": label_selector} if label_selector else {}
        found = self.request("GET", path(api_version, kind, namespace), query=query) or {}
        items: list[Obj] = found.get("items") or []
        return items

    def apply(self, obj: Obj) -> Obj:
        """Server-side apply as the operator's field manager: create or update, idempotent."""
        meta = obj["metadata"]
        out = self.request(
            "PATCH",
            path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"]),
            body=obj,
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
            content_type="application/apply-patch+yaml",
        )
        if out is None:
            raise KubeError(404, f"apply {obj['kind']} {meta['name']}: namespace or kind not found")
        return out

    def apply_reporting(self, obj: Obj) -> str | None:
        """``apply``, saying "created" or "updated" when that happened, None when nothing changed."""
        meta = obj["metadata"]
        before = self.get(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        after = self.apply(obj)
        if before is None:
            return "created"
        # Compare what we declare, not resourceVersions: controllers write status in between.
        if (before.get("spec"), before["metadata"].get("labels")) != (
            after.get("spec"),
            after["metadata"].get("labels"),
        ):
            return "updated"
        return None

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: Obj) -> Obj | None:
        """JSON merge patch of the status subresource (None values remove fields)."""
        return self.request(
            "PATCH",
            path(api_version, kind, namespace, name, "status"),
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    def delete(
        self, api_version: str, kind: str, namespace: str, name: str, *, propagation: str = "Background"
    ) -> bool:
        """True when something was deleted, False when it did not exist."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}
        return self.request("DELETE", path(api_version, kind, namespace, name), body=body) is not None

    def event(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        """A Kubernetes Event about ``obj`` (as ``kubectl describe`` shows them); a refusal is only logged:
        an Event is worth no failed pass."""
        meta = obj["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": os.environ.get("POD_ID", ""),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=body)
        except (KubeError, OSError, ValueError) as exc:
            log.warning("cannot post an Event", reason=reason, error=str(exc))

    def secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data, decoded; None when it does not exist; ``SecretForbidden`` when RBAC refuses it."""
        try:
            found = self.get("v1", "Secret", namespace, name)
        except KubeError as exc:
            if exc.status == 403:
                raise SecretForbidden(403, str(exc).partition(": ")[2]) from exc
            raise
        if found is None:
            return None
        data: Mapping[str, str] = found.get("data") or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}
