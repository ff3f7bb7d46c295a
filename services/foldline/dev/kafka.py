"""A real single-node Apache Kafka broker (KRaft, combined broker+controller) for development and tests.

The broker's jars come from Maven Central through Maven (no tarball download: only package registries are
reachable here) and are cached under ``<cache>/kafka-<version>/libs``. Each broker instance lives in
``<cache>/kafka-dev-<port>/``: its config, pid file, logs and a data dir that is wiped on every fresh start
unless ``keep_data`` is set (``restart`` stops the broker and starts it again on the same data, as a
broker outage would: the fault tests rely on it).

Besides the plain listener it has a SASL_SSL listener (SCRAM-SHA-512 over TLS, port ``port + 2`` or
``FOLDLINE_DEV_KAFKA_SASL_PORT``; ``0`` turns it off) with a fresh self-signed CA and one user
``foldline`` whose random password is made on each fresh start (``secure/`` in the broker's dir).

    python -m foldline.dev.kafka start|stop|restart|status|secure-env
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from foldline.dev.tls import MECHANISM, USERNAME, SecureListener, make_certificates, new_password
from foldline.errors import BrokerUnavailableError, ConfigurationError

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
# Kafka 4.x logs through slf4j 1.7 -> log4j2; the broker's pom brings log4j-core but no slf4j binding.
LOG4J_VERSION = "2.24.3"
DEPENDENCIES = (
    f"org.apache.kafka:kafka_{SCALA_VERSION}:{KAFKA_VERSION}",
    f"org.apache.logging.log4j:log4j-slf4j-impl:{LOG4J_VERSION}",
)
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
JVM_FLAGS = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true")
DEFAULT_PORT = 19092
INSTALL_HINT = (
    "Java 17+ and Maven are needed to run the development broker: apt-get install openjdk-17-jre-headless maven"
)


def default_cache_dir() -> Path:
    """``$FOLDLINE_CACHE_DIR``, else ``<repo root>/.cache`` (git-ignored), else ``~/.cache/foldline``."""
    if env := os.environ.get("FOLDLINE_CACHE_DIR"):
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        pyproject = parent / "pyproject.toml"
        if pyproject.is_file() and 'name = "foldline"' in pyproject.read_text(encoding="utf-8"):
            return parent / ".cache"
    return Path.home() / ".cache" / "foldline"


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def pid_alive(pid: int, marker: str) -> bool:
    """True if ``pid`` runs and its command line contains ``marker`` (guards against pid reuse).

    Zombies count as dead: a broker whose parent is a non-reaping PID 1 lingers as one after exit.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z" and marker in cmdline


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise start/stop across processes (pytest-xdist workers may all call ``start``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class DevKafka:
    def __init__(
        self,
        cache_dir: Path | None = None,
        port: int | None = None,
        host: str | None = None,
        sasl_port: int | None = None,
    ) -> None:
        self.cache_dir = cache_dir or default_cache_dir()
        self.port = port or int(os.environ.get("FOLDLINE_DEV_KAFKA_PORT", DEFAULT_PORT))
        # Loopback by default; the cluster tests bind a broker to the node's own address so pods reach it.
        self.host = host or os.environ.get("FOLDLINE_DEV_KAFKA_HOST", "127.0.0.1")
        self.controller_port = self.port + 1
        # The SASL_SSL listener's port; 0 starts the broker without it.
        self.sasl_port = (
            sasl_port if sasl_port is not None else int(os.environ.get("FOLDLINE_DEV_KAFKA_SASL_PORT", self.port + 2))
        )
        self.dist_dir = self.cache_dir / f"kafka-{KAFKA_VERSION}"
        self.libs_dir = self.dist_dir / "libs"
        self.home = self.cache_dir / f"kafka-dev-{self.port}"
        self.data_dir = self.home / "data"
        self.config_file = self.home / "server.properties"
        self.pid_file = self.home / "broker.pid"
        self.log_file = self.home / "server.log"  # log4j2 output
        self.out_file = self.home / "kafka.out"  # JVM stdout/stderr (crashes, GC warnings)
        self.secure_dir = self.home / "secure"  # CA, broker key store, the user's password (fresh each start)

    @property
    def sasl_bootstrap(self) -> str:
        return f"{self.host}:{self.sasl_port}"

    def secure_listener(self) -> SecureListener:
        """How to reach the running broker's SASL_SSL listener; ConfigurationError if it has none."""
        config = self.config_file.read_text(encoding="utf-8") if self.config_file.is_file() else ""
        listener = SecureListener(
            self.sasl_bootstrap, self.secure_dir / "ca.crt", USERNAME, self.secure_dir / f"{USERNAME}.password"
        )
        if (
            not self.sasl_port
            or f"SASL_SSL://{self.sasl_bootstrap}" not in config
            or not listener.password_file.is_file()
        ):
            raise ConfigurationError(
                f"the development broker {self.bootstrap} runs without a SASL_SSL listener on {self.sasl_bootstrap}; "
                "restart it (scripts/services.sh stop kafka) with FOLDLINE_DEV_KAFKA_SASL_PORT unset or a free port"
            )
        return listener

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    # -- jars --------------------------------------------------------------------------------------------
    def ensure_jars(self) -> Path:
        """Resolve the broker and its runtime dependencies into ``libs/`` once; a marker records the set."""
        pom = self._pom()
        digest = hashlib.sha256(pom.encode()).hexdigest()
        marker = self.dist_dir / ".resolved"
        with file_lock(self.dist_dir / ".lock"):
            if marker.is_file() and marker.read_text() == digest and any(self.libs_dir.glob("kafka_*.jar")):
                return self.libs_dir
            if shutil.which("mvn") is None:
                raise ConfigurationError(f"mvn is not on PATH. {INSTALL_HINT}")
            shutil.rmtree(self.libs_dir, ignore_errors=True)
            (self.dist_dir / "pom.xml").write_text(pom)
            goal = f"{DEPENDENCY_PLUGIN}:copy-dependencies"
            options = ["-DincludeScope=runtime", f"-DoutputDirectory={self.libs_dir}"]
            cmd = ["mvn", "-q", "-B", "-f", str(self.dist_dir / "pom.xml"), goal, *options]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise ConfigurationError(
                    f"Maven could not resolve the Kafka {KAFKA_VERSION} jars ({shlex.join(cmd)}):\n"
                    f"{(done.stdout + done.stderr)[-3000:]}"
                )
            marker.write_text(digest)
        return self.libs_dir

    def _pom(self) -> str:
        deps = "".join(
            f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>\n"
            for g, a, v in (coord.split(":") for coord in DEPENDENCIES)
        )
        return (
            '<project xmlns="http://maven.apache.org/POM/4.0.0">\n<modelVersion>4.0.0</modelVersion>\n'
            "<groupId>dev.foldline</groupId><artifactId>dev-kafka</artifactId>"
            f"<version>{KAFKA_VERSION}</version><packaging>pom</packaging>\n<dependencies>\n{deps}</dependencies>\n"
            "</project>\n"
        )

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self, timeout: float = 90.0, *, keep_data: bool = False) -> str:
        """Start the broker, or reuse the one this cache dir already runs; returns the bootstrap address.

        ``keep_data`` starts on the topics, offsets and transactions of the previous run (if it left a
        formatted data dir) instead of a fresh, empty cluster.
        """
        if shutil.which("java") is None:
            raise ConfigurationError(f"java is not on PATH. {INSTALL_HINT}")
        libs = self.ensure_jars()
        with file_lock(self.home / ".lock"):
            deadline = time.monotonic() + timeout
            if self._pid() is not None:  # ours and alive: answering, or still starting up in another process
                self._wait_ready(deadline)
                return self.bootstrap
            for port in (self.port, self.controller_port, self.sasl_port):
                if port and port_open(port, self.host):
                    raise ConfigurationError(
                        f"port {port} is taken by a process foldline did not start; "
                        "set FOLDLINE_DEV_KAFKA_PORT to use another pair of ports"
                    )
            if not (keep_data and self._formatted()):
                # A fresh data dir by default: tests make unique topics, and it avoids stale cluster ids.
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self.data_dir.mkdir(parents=True)
                password = self._make_secure_material()
                self._write_config()
                self._format(libs, password)
            # `sh -c '... &'` detaches the JVM from us: no zombie or Popen ResourceWarning in the caller.
            java = [*self._java(libs, "-Xms256m", "-Xmx1g"), "kafka.Kafka", str(self.config_file)]
            launch = f"{shlex.join(java)} </dev/null >{shlex.quote(str(self.out_file))} 2>&1 & echo $!"
            done = subprocess.run(
                ["sh", "-c", launch],
                capture_output=True,
                text=True,
                check=True,
                start_new_session=True,
                cwd=self.home,
            )
            self.pid_file.write_text(done.stdout.strip())
            try:
                self._wait_ready(deadline)
            except BrokerUnavailableError:
                self._terminate()  # a half-started broker would only make the next start wait for it again
                raise
        return self.bootstrap

    def restart(self, timeout: float = 90.0) -> str:
        """Stop the broker (cleanly) and start it again on the same data: a broker outage, not a new cluster."""
        self.stop()
        return self.start(timeout, keep_data=True)

    def kill(self) -> None:
        """SIGKILL the broker at once (a crash, no controlled shutdown); ``start(keep_data=True)`` goes on."""
        with file_lock(self.home / ".lock"):
            if (pid := self._pid()) is not None:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
                deadline = time.monotonic() + 30.0
                while self._pid() is not None and time.monotonic() < deadline:
                    time.sleep(0.2)
            self.pid_file.unlink(missing_ok=True)

    def stop(self) -> None:
        """SIGTERM the broker's process group (a clean shutdown), SIGKILL it after 30 s."""
        with file_lock(self.home / ".lock"):
            self._terminate()

    def _terminate(self) -> None:
        if (pid := self._pid()) is not None:
            pgid = os.getpgid(pid)
            for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
                os.killpg(pgid, sig)
                deadline = time.monotonic() + grace
                while self._pid() is not None and time.monotonic() < deadline:
                    time.sleep(0.2)
                if self._pid() is None:
                    break
        self.pid_file.unlink(missing_ok=True)

    def is_running(self) -> bool:
        return self._pid() is not None and port_open(self.port, self.host) and self._metadata_ok(5.0)

    # -- helpers -------------------------------------------------------------------------------------------
    def _formatted(self) -> bool:
        """A data dir ``_format`` prepared, and the config that goes with it (same ports, same dirs)."""
        return (self.data_dir / "meta.properties").is_file() and self.config_file.is_file()

    def _pid(self) -> int | None:
        """The pid from our pid file if that process is alive and is our broker, else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid, str(self.config_file)) else None

    def _metadata_ok(self, timeout: float) -> bool:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.connection.setup.timeout.ms": 2000})
        try:
            return bool(admin.list_topics(timeout=timeout).brokers)
        except Exception:  # KafkaException while starting; any failure just means "not yet"
            return False

    def _wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self._pid() is None:
                raise BrokerUnavailableError(f"the Kafka broker exited during start-up:\n{self._log_tail()}")
            # Probe the socket first so librdkafka does not log "connection refused" while the JVM boots.
            listening = port_open(self.port, self.host) and (not self.sasl_port or port_open(self.sasl_port, self.host))
            if listening and self._metadata_ok(min(5.0, max(deadline - time.monotonic(), 0.5))):
                return
            time.sleep(0.3)
        raise BrokerUnavailableError(
            f"the Kafka broker at {self.bootstrap} did not answer in time:\n{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        return "\n".join(f"--- {path} ---\n{tail(path)}" for path in (self.log_file, self.out_file))

    def _java(self, libs: Path, *heap: str) -> list[str]:
        logging = [
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.home}",
        ]
        return ["java", *heap, *JVM_FLAGS, *logging, "-cp", f"{libs}/*"]

    def _make_secure_material(self) -> str | None:
        """The secured listener's CA, key store and user password, made afresh; None without the listener."""
        shutil.rmtree(self.secure_dir, ignore_errors=True)
        if not self.sasl_port:
            return None
        make_certificates(self.secure_dir, self.host)
        return new_password(self.secure_dir / f"{USERNAME}.password")

    def _format(self, libs: Path, password: str | None) -> None:
        # kafka-storage reads an id with a leading "-" as an option; Kafka's own Uuid avoids those too.
        cluster_id = "-"
        while cluster_id.startswith("-"):
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # SCRAM users live in the cluster metadata; formatting adds them before the first start.
        scram = ["--add-scram", f"{MECHANISM}=[name={USERNAME},password={password}]"] if password else []
        cmd = [
            *self._java(libs, "-Xmx256m"),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.config_file),
            "--ignore-formatted",
            *scram,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=self.home)
        if done.returncode != 0:
            output = f"{done.stdout}{done.stderr}".replace(password or "\0", "***")
            raise BrokerUnavailableError(f"formatting the Kafka storage failed:\n{output}")

    def _write_config(self) -> None:
        listeners = [f"PLAINTEXT://{self.host}:{self.port}", f"CONTROLLER://{self.host}:{self.controller_port}"]
        advertised = [f"PLAINTEXT://{self.host}:{self.port}"]
        secured: dict[str, str] = {}
        if self.sasl_port:
            listeners.append(f"SASL_SSL://{self.sasl_bootstrap}")
            advertised.append(f"SASL_SSL://{self.sasl_bootstrap}")
            secured = {
                "sasl.enabled.mechanisms": MECHANISM,
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                ),
                "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
                "listener.name.sasl_ssl.ssl.keystore.location": str(self.secure_dir / "broker.pem"),
                "listener.name.sasl_ssl.ssl.client.auth": "none",
            }
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            # A static single-voter quorum: simpler than a dynamic quorum and needs no --standalone format.
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            # One partition per internal topic: a single broker gains nothing from 50, and loading them
            # delays the first group join and init_transactions on a fresh broker.
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Both the classic protocol and KIP-848's consumer protocol; share groups stay off (share.version
            # is not enabled by the format step).
            "group.coordinator.rebalance.protocols": "classic,consumer",
            # A killed member's partitions move after 10 s instead of 45 s, for both protocols, and a
            # crashed producer's open transaction is aborted within seconds: failover tests stay short.
            "group.consumer.min.session.timeout.ms": "6000",
            "group.consumer.session.timeout.ms": "10000",
            "group.consumer.min.heartbeat.interval.ms": "500",
            "group.consumer.heartbeat.interval.ms": "1000",
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "2000",
            **secured,
        }
        self.config_file.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        (self.home / "log4j2.properties").write_text(
            "status = warn\n"
            # Kafka logs its own shutdown from a JVM hook; log4j2's hook would stop logging before that.
            "shutdownHook = disable\n"
            "appender.file.type = File\n"
            "appender.file.name = FILE\n"
            f"appender.file.fileName = {self.log_file}\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.file.ref = FILE\n"
            # Per-request and per-partition state logging would dwarf everything else.
            "logger.request.name = kafka.request.logger\n"
            "logger.request.level = WARN\n"
            "logger.state.name = state.change.logger\n"
            "logger.state.level = WARN\n"
        )


ACTIONS = ("start", "stop", "restart", "status", "secure-env")


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ACTIONS:
        print(f"usage: python -m foldline.dev.kafka {'|'.join(ACTIONS)}", file=sys.stderr)
        return 2
    broker = DevKafka()
    if argv[0] == "start":
        print(broker.start())
    elif argv[0] == "secure-env":  # `export $(python -m foldline.dev.kafka secure-env)`: the password stays in its file
        for name, value in broker.secure_listener().env().items():
            print(f"{name}={shlex.quote(value)}")
    elif argv[0] == "restart":  # keeps the data: topics, committed offsets and transactions survive
        print(broker.restart())
    elif argv[0] == "stop":
        broker.stop()
        print("stopped")
    elif broker.is_running():
        print(f"running {broker.bootstrap}")
    else:
        print(f"stopped {broker.bootstrap}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
