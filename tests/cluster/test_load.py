"""`scripts/cluster.sh load`: an image archive goes into the node's containerd, and a pod runs it.

This is how foldline's own image gets onto the node (there is no registry): the archive here is a docker
archive written by the test itself, one layer holding this machine's static busybox.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid
from pathlib import Path

import pytest

from tests.cluster.node import Cluster, ClusterError

pytestmark = pytest.mark.cluster


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _docker_archive(path: Path, repo_tag: str, marker: str) -> None:
    """A docker-archive (what `docker save` writes): manifest.json, an image config and one layer."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w") as layer:
        layer.add("/bin/busybox", arcname="bin/busybox")
        for applet in ("sh", "sleep", "cat"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            layer.addfile(link)
        _add(layer, "etc/marker", marker.encode())
    layer_bytes = layer_buf.getvalue()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_bytes).hexdigest()]},
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [repo_tag], "Layers": ["layer.tar"]}]
    with tarfile.open(path, "w") as archive:
        _add(archive, config_name, config)
        _add(archive, "layer.tar", layer_bytes)
        _add(archive, "manifest.json", json.dumps(manifest).encode())


def test_a_loaded_archive_runs_in_a_pod_under_its_own_and_extra_names(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex
    archive = tmp_path / "probe.tar"
    _docker_archive(archive, f"probe-{marker[:8]}:1", marker)
    names = cluster.load_image(archive, f"example.org/team/probe-{marker[:8]}:2")
    # Names as Kubernetes reads them: a bare `name:tag` is docker.io/library/name:tag.
    assert names == [f"docker.io/library/probe-{marker[:8]}:1", f"example.org/team/probe-{marker[:8]}:2"]
    for index, image in enumerate((f"probe-{marker[:8]}:1", f"example.org/team/probe-{marker[:8]}:2")):
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"loaded-{index}"},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {"name": "main", "image": image, "imagePullPolicy": "Never", "command": ["/bin/sleep", "100000"]}
                ],
            },
        }
        cluster.apply(pod, namespace=namespace)
        cluster.wait_pod_ready(namespace, f"loaded-{index}")
        assert cluster.exec(namespace, f"loaded-{index}", "cat", "/etc/marker").stdout == marker


def test_loading_something_that_is_not_an_image_archive_fails_clearly(cluster: Cluster, tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="no such image archive"):
        cluster.load_image(tmp_path / "absent.tar")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar archive at all")
    with pytest.raises(ClusterError, match=r"importing .*junk\.tar failed"):
        cluster.load_image(junk)
