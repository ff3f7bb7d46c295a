"""Start and stop the real local control plane (etcd + kube-apiserver +
kube-controller-manager) that the e2e tests run against.

A thin wrapper over ``scripts/envtest.sh``, which builds the binaries from
``tools/envtest`` on first use (several minutes cold) and caches them. Failures
raise ``RuntimeError`` with the script output and log tails: the e2e tests need
this control plane, so a broken one must fail loudly, never be skipped.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.scripts import ScriptTimeout, run_script, tail

__all__ = ["start_control_plane", "stop_control_plane"]

# A cold build (empty Go module and build caches) takes ~7-10 min on 2 cores;
# leave generous headroom, and still bound it so CI never hangs forever.
START_TIMEOUT_S = 30 * 60
STOP_TIMEOUT_S = 120
_LOG_TAIL_LINES = 40
# The script's own logs, in the order worth reading.
_LOGS = ("build", "etcd", "kube-apiserver", "kube-controller-manager")


def _script(repo_root: Path) -> Path:
    return repo_root / "scripts" / "envtest.sh"


def _log_dir(repo_root: Path) -> Path:
    # Mirrors the script: ${FOLDLINE_CACHE_DIR:-<repo>/.cache}/envtest/logs.
    cache = os.environ.get("FOLDLINE_CACHE_DIR") or str(repo_root / ".cache")
    return Path(cache) / "envtest" / "logs"


def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return tail(text, lines)


def _log_tails(repo_root: Path) -> str:
    log_dir = _log_dir(repo_root)
    parts = []
    for name in _LOGS:
        log = log_dir / f"{name}.log"
        if log.is_file():
            parts.append(f"----- tail of {log} -----\n{_tail(log.read_text(errors='replace'))}")
    return "\n".join(parts) or f"(no logs in {log_dir})"


def _run(repo_root: Path, command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    script = _script(repo_root)
    if not script.is_file():
        raise RuntimeError(f"control-plane script not found: {script}")
    # The script's own session: a timeout ends a `go build` it runs too (the servers have sessions of their own).
    try:
        return run_script(script, command, cwd=repo_root, timeout=timeout)
    except ScriptTimeout as exc:
        tails = _log_tails(repo_root)
        if command != "stop":  # don't leave half-started servers behind
            subprocess.run(
                ["bash", str(script), "stop"], stdin=subprocess.DEVNULL, capture_output=True, timeout=STOP_TIMEOUT_S
            )
        raise RuntimeError(
            f"`envtest.sh {command}` timed out after {timeout:.0f}s\n{_tail(exc.stderr)}\n{tails}"
        ) from None


def start_control_plane(repo_root: Path) -> Path:
    """Build if needed, (re)start a fresh, empty control plane; return its kubeconfig path."""
    result = _run(repo_root, "start", START_TIMEOUT_S)
    if result.returncode != 0:
        # Seen twice here: etcd shut itself down a second after starting and the apiserver could not
        # connect; a second start went through. One more try, and the first failure stays in the report.
        first = _tail(result.stderr, 60)
        result = _run(repo_root, "start", START_TIMEOUT_S)
        if result.returncode != 0:
            result = subprocess.CompletedProcess(
                result.args,
                result.returncode,
                result.stdout,
                f"first attempt:\n{first}\nsecond attempt:\n{result.stderr}",
            )
    if result.returncode != 0:
        # On failure the script itself prints the tails of the relevant logs
        # (build log or component logs), with its error message last.
        raise RuntimeError(
            f"starting the control plane failed (exit {result.returncode}; logs in {_log_dir(repo_root)}):\n"
            + _tail(result.stderr, 150)
        )
    # The script prints the kubeconfig path as its last stdout line.
    lines = result.stdout.strip().splitlines()
    kubeconfig = Path(lines[-1]) if lines else None
    if kubeconfig is None or not kubeconfig.is_file():
        raise RuntimeError(
            f"control plane started but reported no kubeconfig (stdout: {result.stdout!r})\n" + _tail(result.stderr)
        )
    return kubeconfig


def stop_control_plane(repo_root: Path) -> None:
    """Stop every process that ``start_control_plane`` started (no-op if none run)."""
    result = _run(repo_root, "stop", STOP_TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError(f"stopping the control plane failed (exit {result.returncode}):\n" + _tail(result.stderr))
