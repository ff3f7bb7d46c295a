"""CPU seconds and resident memory of a process and every process it started, sampled from /proc."""

from __future__ import annotations

import os
import threading
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(parent pid, own CPU seconds, CPU seconds of its reaped children), or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return int(fields[1]), (utime + stime) / _TICK, (cutime + cstime) / _TICK


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float | None:
    """A process's own CPU seconds so far (all its threads), or None when it is gone."""
    stat = _stat(pid)
    return None if stat is None else stat[1]


def listening_pid(port: int) -> int | None:
    """The process on this machine that listens on TCP ``port`` (a local broker), if one can be seen."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in inodes:
                    return int(entry.name)
            except OSError:
                continue
    return None


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                parents.setdefault(stat[0], []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


class TreeSampler:
    """Samples a process tree every ``interval`` seconds: CPU seconds so far and the peak of the summed RSS.

    CPU counts each live process's own time plus what its reaped children used; a child that exited
    between two samples and was not yet reaped is lost (worker processes live as long as their parent).
    """

    def __init__(self, root: int, interval: float = 0.5, rescan: int = 4) -> None:
        self.root = root
        self.interval = interval
        #: The whole of /proc is scanned for new children every ``rescan`` samples only: it costs CPU that
        #: the contender on the same cores would otherwise have.
        self.rescan = rescan
        self._pids: list[int] = []
        self._samples = 0
        self.cpu_s = 0.0
        self.peak_rss_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)

    def sample(self) -> None:
        if self._samples % self.rescan == 0:
            self._pids = descendants(self.root)
        self._samples += 1
        cpu, rss = 0.0, 0.0
        for pid in self._pids:
            stat = _stat(pid)
            if stat is not None:
                cpu += stat[1] + stat[2]
                rss += _rss_mb(pid)
        self.cpu_s = max(self.cpu_s, cpu)
        self.peak_rss_mb = max(self.peak_rss_mb, rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> TreeSampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        """A last sample, then no more."""
        self._stop.set()
        self._thread.join()
        self._samples = 0  # rescan: count every process alive at the end
        self.sample()
