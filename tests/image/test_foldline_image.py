"""The foldline image, run for real: its entry points, its user, a read-only root, its labels."""

from __future__ import annotations

import json

import pytest

from tests.image.support import BuiltImage, archive_manifest, image_script, project_version

pytestmark = pytest.mark.image

# Run in the image: which paths a process may write, and as whom.
WRITE_PROBE = """
import json, os, pathlib
paths = ["/", "/opt/foldline", "/opt/foldline/bin", "/etc", "/var/lib/foldline", "/usr/lib",
         os.environ["FOLDLINE_STATE_DIR"], "/tmp", os.environ["HOME"]]
writes = {}
for path in paths:
    probe = pathlib.Path(path) / ".write-probe"
    try:
        probe.write_text("x")
        probe.unlink()
        writes[path] = "ok"
    except OSError as exc:
        writes[path] = os.strerror(exc.errno) if exc.errno else str(exc)
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "writes": writes,
                  "state_dir": os.environ["FOLDLINE_STATE_DIR"], "home": os.environ["HOME"]}))
"""

# Run in the image: a real LMDB store (the handler's default) in the state directory.
STORE_PROBE = """
import json, os, lmdb
env = lmdb.open(os.path.join(os.environ["FOLDLINE_STATE_DIR"], "probe"), map_size=1 << 20)
with env.begin(write=True) as txn:
    txn.put(b"key", b"value")
with env.begin() as txn:
    print(json.dumps({"value": txn.get(b"key").decode()}))
"""

# Run in the image: every module the processes import has bytecode compiled at build time.
BYTECODE_PROBE = """
import importlib.util, json, os, sys
import foldline.cli, foldline.handler.wiring, foldline.gateway.app, foldline.projection.cli
import foldline_operator.__main__, foldline_operator.handlers, kopf, kubernetes.client
missing, checked = [], 0
for module in list(sys.modules.values()):
    path = getattr(module, "__file__", None) or ""
    if path.endswith(".py") and path.startswith("/opt/foldline/"):
        checked += 1
        if not os.path.exists(importlib.util.cache_from_source(path)):
            missing.append(path)
print(json.dumps({"checked": checked, "missing": missing, "executable": sys.executable}))
"""


def test_foldline_is_the_entrypoint(foldline_image: BuiltImage) -> None:
    proc = foldline_image.run("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: foldline")
    for command in ("command-handler", "projector", "gateway"):
        assert command in proc.stdout


def test_foldline_rejects_a_bad_aggregate_path_clearly(foldline_image: BuiltImage) -> None:
    proc = foldline_image.run("topics", "--aggregate", "no_such_package:Nope", "--partitions", "1")
    assert proc.returncode == 2
    assert "cannot import 'no_such_package'" in proc.stderr


def test_the_operator_runs_from_the_same_image(foldline_image: BuiltImage) -> None:
    proc = foldline_image.run("--help", entrypoint="foldline-operator")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: foldline-operator")
    modules = foldline_image.python(
        "import json, kopf, kubernetes, foldline_operator.handlers as h; print(json.dumps([kopf.__name__, h.__name__]))"
    )
    assert modules == ["kopf", "foldline_operator.handlers"]


def test_runs_as_10001_with_only_tmp_and_the_state_dir_writable(foldline_image: BuiltImage) -> None:
    probe = foldline_image.python(WRITE_PROBE)
    assert (probe["uid"], probe["gid"]) == (10001, 10001)
    assert probe["state_dir"] == "/var/lib/foldline/state"
    assert probe["home"] == "/tmp"
    writable = {path for path, outcome in probe["writes"].items() if outcome == "ok"}
    assert writable == {"/tmp", "/var/lib/foldline/state"}, probe["writes"]
    assert probe["writes"]["/opt/foldline"] == "Read-only file system"


def test_a_store_works_in_the_state_dir_under_a_read_only_root(foldline_image: BuiltImage) -> None:
    assert foldline_image.python(STORE_PROBE) == {"value": "value"}


def test_bytecode_is_compiled_at_build_time(foldline_image: BuiltImage) -> None:
    probe = foldline_image.python(BYTECODE_PROBE)
    assert probe["checked"] > 200, probe
    assert probe["missing"] == []
    assert probe["executable"] == "/opt/foldline/bin/python"


def test_image_config_and_oci_labels(foldline_image: BuiltImage) -> None:
    raw = image_script("skopeo", "inspect", "--config", f"docker-archive:{foldline_image.archive}").stdout
    config = json.loads(raw)["config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["foldline"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/foldline/bin:")
    assert "/var/lib/foldline/state" in config["Volumes"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "foldline"
    assert labels["org.opencontainers.image.version"] == project_version()
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.description"]
    assert labels["org.opencontainers.image.source"]
    revision = labels["org.opencontainers.image.revision"]
    assert len(revision.removesuffix("-dirty")) == 40, revision


def test_the_archive_names_the_image_as_a_kubelet_resolves_it(foldline_image: BuiltImage) -> None:
    # `ctr -n k8s.io images import` keeps this name; a pod's `image: foldline:0.1.0` normalizes to it.
    assert archive_manifest(foldline_image.archive)["RepoTags"] == [f"docker.io/library/foldline:{project_version()}"]
