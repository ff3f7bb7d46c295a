"""Running the project's own shell scripts (envtest, the one-node cluster) from the test suites."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


class ScriptTimeout(Exception):
    """The script ran past its timeout; its whole session was killed. ``stderr`` is what it said."""

    def __init__(self, stderr: str) -> None:
        super().__init__("script timed out")
        self.stderr = stderr


def tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run_script(script: Path, *args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """``bash script args`` in a session of its own, so a timeout ends it with whatever it runs (a build)."""
    proc = subprocess.Popen(
        ["bash", str(script), *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        raise ScriptTimeout(stderr) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
