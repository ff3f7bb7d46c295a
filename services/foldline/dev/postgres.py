"""A real PostgreSQL server for development and tests, kept in ``<cache>/postgres-<port>/``.

The cluster (``data/``) survives restarts; the server listens on 127.0.0.1 (and on one more address of this
machine when asked, for pods), trusts loopback connections and the networks it is given, and runs with
fsync off. Debian's server binaries are used (installed with apt if missing).

    python -m foldline.dev.postgres start|stop|status
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from foldline.dev.kafka import default_cache_dir, file_lock, pid_alive, port_open, tail
from foldline.errors import ConfigurationError, StoreUnavailableError

DEFAULT_PORT = 15432
INSTALL_HINT = "PostgreSQL's server binaries are needed: apt-get update && apt-get install -y postgresql"
POSTGRESQL_CONF = """
# --- foldline dev/test server (listen_addresses is given at start) ---
max_connections = 200
# Tests only: durability is traded for speed. A crash may corrupt this throwaway cluster; delete data/.
fsync = off
synchronous_commit = off
full_page_writes = off
"""
# Trust, but only over the unix socket (in the cache dir), loopback TCP and the networks a caller names
# (the cluster tests' pod network): a throwaway server for development and tests.
PG_HBA_CONF = """local all all trust
host all all 127.0.0.1/32 trust
host all all ::1/128 trust
"""


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` (Debian), else the dir of ``initdb`` on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    initdb = found[-1] if found else shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def major_version(bin_dir: Path) -> str:
    """ "15" from ``pg_ctl (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)``."""
    out = subprocess.run([str(bin_dir / "pg_ctl"), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.split()[2].split(".")[0]


def install_postgres() -> Path:
    """Install Debian's PostgreSQL with apt (we are root in dev containers and CI) or explain how."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ConfigurationError(f"no initdb under /usr/lib/postgresql/*/bin or on PATH. {INSTALL_HINT}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "postgresql"]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise ConfigurationError(f"{' '.join(cmd)} failed: {done.stderr[-2000:]}\n{INSTALL_HINT}")
    if (bin_dir := find_bin_dir()) is None:
        raise ConfigurationError(f"apt-get installed postgresql but no initdb was found. {INSTALL_HINT}")
    return bin_dir


def _searchable_by_others(path: Path) -> bool:
    """Whether every existing directory from / down to ``path`` lets other users pass through."""
    for part in [*reversed(path.resolve().parents), path.resolve()]:
        if part.exists() and not part.stat().st_mode & 0o001:
            return False
    return True


class DevPostgres:
    def __init__(
        self,
        cache_dir: Path | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        clients: tuple[str, ...] = (),
    ) -> None:
        self.cache_dir = cache_dir or default_cache_dir()
        self.port = port or int(os.environ.get("FOLDLINE_DEV_POSTGRES_PORT", DEFAULT_PORT))
        self.host = host  # an address besides loopback to listen on (the cluster's node address)
        self.clients = clients  # CIDRs trusted besides loopback (the cluster's pod network)
        # PostgreSQL refuses to run as root: as root we act as the `postgres` system user.
        self.run_as = "postgres" if os.geteuid() == 0 else None
        self.root = self.cache_dir / f"postgres-{self.port}"  # one server per port: the cluster tests run their own
        if self.run_as is not None and not _searchable_by_others(self.cache_dir):
            # A checkout under /root (0700) cannot be entered by the postgres user; keep the cluster where it can.
            self.root = Path("/var/tmp") / f"foldline-postgres-{self.port}"
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "run"
        self.log_file = self.root / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://foldline@{self.host}:{self.port}/foldline"

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> str:
        """Start the server (initdb on first use), or reuse a running one; returns the DSN."""
        bin_dir = find_bin_dir() or install_postgres()
        with file_lock(self.root / ".lock"):
            running_port = self._running_port()
            if running_port is not None and running_port != self.port:  # started with another port: restart
                self._pg_ctl(bin_dir, "stop", "-m", "fast", "-t", "30")
                running_port = None
            if running_port is None:
                if port_open(self.port):
                    raise ConfigurationError(
                        f"port {self.port} is taken by a process foldline did not start; "
                        "set FOLDLINE_DEV_POSTGRES_PORT to use another port"
                    )
                self._prepare_dirs()
                if not self._initialised(bin_dir):
                    self._initdb(bin_dir)
                self._write_hba()
                # -k: the unix socket lives in the cache dir, not /var/run/postgresql (which may not exist).
                listen = ",".join(dict.fromkeys(("127.0.0.1", self.host)))
                options = f"-p {self.port} -k {shlex.quote(str(self.socket_dir))} -c listen_addresses={listen}"
                args = ["start", "-w", "-t", str(int(timeout)), "-l", str(self.log_file), "-o", options]
                done = self._pg_ctl(bin_dir, *args)
                if done.returncode != 0:
                    raise StoreUnavailableError(
                        f"pg_ctl start failed: {done.stdout}{done.stderr}\n"
                        f"--- {self.log_file} ---\n{tail(self.log_file)}"
                    )
            else:  # reused: this caller's trusted networks apply from now on
                self._write_hba()
                self._pg_ctl(bin_dir, "reload")
            self._wait_and_create_database(time.monotonic() + timeout)
        return self.dsn

    def stop(self) -> None:
        """A fast shutdown (disconnects clients); an immediate one if that does not finish in 30 s."""
        bin_dir = find_bin_dir()
        with file_lock(self.root / ".lock"):
            if bin_dir is None or self._running_port() is None:
                return
            if self._pg_ctl(bin_dir, "stop", "-m", "fast", "-t", "30").returncode != 0:
                self._pg_ctl(bin_dir, "stop", "-m", "immediate", "-t", "30")

    def is_running(self) -> bool:
        if self._running_port() != self.port:
            return False
        try:
            with psycopg.connect(self.dsn, connect_timeout=3):
                return True
        except psycopg.Error:
            return False

    # -- helpers -------------------------------------------------------------------------------------------
    def _running_port(self) -> int | None:
        """The port of the postmaster that owns our data dir, from its postmaster.pid, if it is alive."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        return port if pid_alive(pid, str(self.data_dir)) else None

    def _run(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", self.run_as, "--"] if self.run_as else []
        # cwd: the server user may not be able to enter the caller's cwd (e.g. /root).
        # A new session: Ctrl-C in the terminal that ran pytest must not hit the postmaster.
        return subprocess.run(
            [*prefix, *cmd],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.root,
            start_new_session=True,
        )

    def _pg_ctl(self, bin_dir: Path, action: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run([str(bin_dir / "pg_ctl"), action, "-D", str(self.data_dir), *args])

    def _prepare_dirs(self) -> None:
        for path in (self.data_dir, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.log_file.touch()
        if self.run_as is None:
            return
        try:
            user = pwd.getpwnam(self.run_as)
        except KeyError:  # Debian's package creates it; a hand-built server may not have
            subprocess.run(
                ["useradd", "--system", "--user-group", "--shell", "/usr/sbin/nologin", self.run_as],
                check=True,
            )
            user = pwd.getpwnam(self.run_as)
        for path in (self.data_dir, self.socket_dir, self.log_file):
            os.chown(path, user.pw_uid, user.pw_gid)
        if self._run(["test", "-w", str(self.data_dir)]).returncode != 0:
            raise ConfigurationError(
                f"the {self.run_as} user cannot reach {self.data_dir} (a parent directory is not "
                "world-searchable); set FOLDLINE_CACHE_DIR to a directory it can reach"
            )

    def _initialised(self, bin_dir: Path) -> bool:
        """True if data/ holds a cluster of this server's major version (a stale one is re-created)."""
        try:
            return (self.data_dir / "PG_VERSION").read_text().strip() == major_version(bin_dir)
        except OSError:
            return False

    def _initdb(self, bin_dir: Path) -> None:
        # Emptied, not removed: the directory keeps the owner and 0700 mode set by _prepare_dirs.
        for child in self.data_dir.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
        # The bootstrap superuser is `foldline`; --no-sync and the C locale keep this fast and predictable.
        cmd = [
            str(bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "foldline",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        ]
        done = self._run(cmd)
        if done.returncode != 0:
            raise ConfigurationError(f"initdb failed:\n{done.stdout}{done.stderr}")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(POSTGRESQL_CONF)

    def _write_hba(self) -> None:
        # The extra listen address is this machine's too: connections from the host arrive from it.
        own = () if self.host == "127.0.0.1" else (f"{self.host}/32",)
        extra = "".join(f"host all all {cidr} trust\n" for cidr in (*own, *self.clients))
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(PG_HBA_CONF + extra)
        if self.run_as is not None:
            user = pwd.getpwnam(self.run_as)
            os.chown(hba, user.pw_uid, user.pw_gid)

    def _wait_and_create_database(self, deadline: float) -> None:
        maintenance = f"postgresql://foldline@127.0.0.1:{self.port}/postgres"
        while True:
            try:
                with psycopg.connect(maintenance, connect_timeout=3, autocommit=True) as conn:
                    if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'foldline'").fetchone() is None:
                        conn.execute("CREATE DATABASE foldline OWNER foldline")
                return
            except psycopg.OperationalError as exc:  # still starting up, or in crash recovery
                if time.monotonic() > deadline:
                    raise StoreUnavailableError(
                        f"PostgreSQL at {self.dsn} did not accept connections: {exc}\n"
                        f"--- {self.log_file} ---\n{tail(self.log_file)}"
                    ) from exc
                time.sleep(0.2)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("start", "stop", "restart", "status"):
        print("usage: python -m foldline.dev.postgres start|stop|restart|status", file=sys.stderr)
        return 2
    server = DevPostgres()
    if argv[0] == "start":
        print(server.start())
    elif argv[0] == "restart":  # the cluster in data/ always survives a restart
        server.stop()
        print(server.start())
    elif argv[0] == "stop":
        server.stop()
        print("stopped")
    elif server.is_running():
        print(f"running {server.dsn}")
    else:
        print(f"stopped {server.dsn}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
