"""The built images, run for real with podman on this checkout's container storage.

``make install`` builds the images (``scripts/image.sh build``); these tests never build one. They
run each container as a pod would: read-only root filesystem, ``/tmp`` a tmpfs, the image's own user.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "image.sh"
VERSION_LINE = "version = "


def project_version() -> str:
    for line in (REPO / "pyproject.toml").read_text().splitlines():
        if line.startswith(VERSION_LINE):
            return line.split("=", 1)[1].strip().strip('"')
    raise AssertionError("pyproject.toml has no version")


def image_script(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``scripts/image.sh ARGS``: podman, buildah and skopeo on this checkout's container storage."""
    proc = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"scripts/image.sh {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def archive_manifest(archive: Path) -> dict[str, Any]:
    """The docker archive's manifest.json entry: its config file (named by digest) and repository tags."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None, f"{archive} has no manifest.json"
        entries: list[dict[str, Any]] = json.load(member)
    assert len(entries) == 1, f"{archive} holds {len(entries)} images, expected one"
    return entries[0]


@dataclass(frozen=True)
class BuiltImage:
    """An image that ``scripts/image.sh build`` made: its reference and its docker archive."""

    reference: str
    archive: Path

    def run(
        self,
        *args: str,
        entrypoint: str | None = None,
        network: str = "none",
        options: tuple[str, ...] = (),
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """``podman run`` it as a pod runs it: read-only root, only /tmp (and the state volume) writable."""
        command = [
            "podman",
            "run",
            "--rm",
            f"--network={network}",
            "--read-only",
            "--read-only-tmpfs=false",
            "--tmpfs",
            "/tmp:rw,nosuid,nodev",
            *options,
        ]
        if entrypoint is not None:
            command += ["--entrypoint", entrypoint]
        return image_script(*command, self.reference, *args, timeout=timeout, check=False)

    def python(self, code: str, *, network: str = "none") -> Any:
        """Run ``python -c code`` in the image; the code prints one JSON document, returned parsed."""
        proc = self.run("-c", code, entrypoint="python", network=network)
        assert proc.returncode == 0, f"python in {self.reference} exited {proc.returncode}:\n{proc.stderr}"
        return json.loads(proc.stdout)


def built_image(name: str) -> BuiltImage:
    """The image ``name`` of this version, checked to be the very one its archive holds."""
    version = project_version()
    reference = f"docker.io/library/{name}:{version}"
    archive = REPO / ".cache" / "images" / f"{name}-{version}.tar"
    if not archive.is_file():
        raise AssertionError(
            f"{archive} is missing: the images are built by `make install` (scripts/image.sh build), never by the tests"
        )
    config = str(archive_manifest(archive)["Config"])
    inspect = image_script("podman", "image", "inspect", "--format", "{{.Id}}", reference, check=False)
    if inspect.returncode != 0:
        raise AssertionError(
            f"{reference} is not in this checkout's container storage "
            f"({inspect.stderr.strip()}): run scripts/image.sh build"
        )
    image_id = inspect.stdout.strip()
    if config.removesuffix(".json") != image_id:
        raise AssertionError(
            f"{reference} ({image_id}) is not the image in {archive} ({config}): run scripts/image.sh build"
        )
    return BuiltImage(reference, archive)
