"""Frozen settings read from ``FOLDLINE_*`` environment variables.

Secrets (SASL password) are kept out of ``repr`` so that logging a settings object never leaks them.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Self

from foldline.errors import ConfigurationError

_PREFIX = "FOLDLINE_"


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """Whole CPUs this process may use: its CPU affinity, capped by a cgroup CPU limit (a container's
    ``resources.limits.cpu``, rounded up), v2 or v1."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limits = []
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        if quota != "max":
            limits.append((int(quota), int(period)))
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        if quota_us > 0:
            limits.append((quota_us, int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())))
    except (OSError, ValueError):
        pass
    for quota_us, period_us in limits:
        if quota_us > 0 and period_us > 0:
            count = min(count, -(-quota_us // period_us))
    return max(1, count)


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    """``FOLDLINE_<name>``, stripped, or ``default`` when unset or blank."""
    return env.get(_PREFIX + name, default).strip() or default


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env_str(env, name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{_PREFIX}{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{_PREFIX}{name} must be at least {minimum}, got {value}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env_str(env, name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{_PREFIX}{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigurationError(f"{_PREFIX}{name} must be positive, got {value}")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env_str(env, name, "true" if default else "false").lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{_PREFIX}{name} must be true or false, got {raw!r}")


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(env, name, default).lower()
    if value not in choices:
        raise ConfigurationError(f"{_PREFIX}{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


#: Security protocols (librdkafka's names) and the SASL mechanisms foldline configures.
SECURITY_PROTOCOLS = ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach Kafka. ``sasl_password`` never appears in ``repr``.

    A ``sasl_*`` protocol needs a username and a password (``FOLDLINE_KAFKA_SASL_PASSWORD``, or the path
    of a file holding it in ``FOLDLINE_KAFKA_SASL_PASSWORD_FILE``, as a mounted Secret); the mechanism
    defaults to SCRAM-SHA-512. Credentials with a protocol that would not send them are refused.
    """

    bootstrap_servers: str = "127.0.0.1:19092"
    security_protocol: str = "plaintext"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_ca_location: str = ""
    # "consumer" is KIP-848; "auto" uses it when the broker offers it, else classic cooperative-sticky.
    group_protocol: str = "auto"
    #: How long a starting process probes the broker for a refused login before going on regardless.
    connect_timeout_s: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        settings = cls(
            bootstrap_servers=env_str(env, "KAFKA_BOOTSTRAP", cls.bootstrap_servers),
            security_protocol=env_choice(env, "KAFKA_SECURITY_PROTOCOL", "plaintext", SECURITY_PROTOCOLS),
            sasl_mechanism=env_str(env, "KAFKA_SASL_MECHANISM", "").upper(),
            sasl_username=env_str(env, "KAFKA_SASL_USERNAME", ""),
            sasl_password=_password(env),
            ssl_ca_location=env_str(env, "KAFKA_SSL_CA_LOCATION", ""),
            group_protocol=env_choice(env, "KAFKA_GROUP_PROTOCOL", "auto", ("auto", "classic", "consumer")),
            connect_timeout_s=env_float(env, "KAFKA_CONNECT_TIMEOUT_S", cls.connect_timeout_s),
        )
        settings.check()
        if settings.ssl_ca_location and not Path(settings.ssl_ca_location).is_file():
            raise ConfigurationError(f"{_PREFIX}KAFKA_SSL_CA_LOCATION: no file {settings.ssl_ca_location}")
        return settings

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("sasl_")

    def check(self) -> None:
        """Refuse settings that would fail obscurely later, or send credentials nowhere (or in clear)."""
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigurationError(
                f"{_PREFIX}KAFKA_SECURITY_PROTOCOL must be one of {', '.join(SECURITY_PROTOCOLS)}, "
                f"got {self.security_protocol!r}"
            )
        if self.sasl_mechanism and self.sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigurationError(
                f"{_PREFIX}KAFKA_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)}, "
                f"got {self.sasl_mechanism!r}"
            )
        if self.uses_sasl and not (self.sasl_username and self.sasl_password):
            raise ConfigurationError(
                f"{_PREFIX}KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs {_PREFIX}KAFKA_SASL_USERNAME "
                f"and {_PREFIX}KAFKA_SASL_PASSWORD (or {_PREFIX}KAFKA_SASL_PASSWORD_FILE)"
            )
        if not self.uses_sasl and (self.sasl_username or self.sasl_password or self.sasl_mechanism):
            raise ConfigurationError(
                f"SASL credentials are set but {_PREFIX}KAFKA_SECURITY_PROTOCOL is {self.security_protocol}, "
                "which never sends them: use sasl_ssl (or sasl_plaintext)"
            )
        if self.ssl_ca_location and self.security_protocol not in ("ssl", "sasl_ssl"):
            raise ConfigurationError(
                f"{_PREFIX}KAFKA_SSL_CA_LOCATION is set but {_PREFIX}KAFKA_SECURITY_PROTOCOL is "
                f"{self.security_protocol}, which does not use TLS: use ssl or sasl_ssl"
            )

    def client_config(self) -> dict[str, Any]:
        """The librdkafka settings shared by every client foldline creates (``foldline.clients``)."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.uses_sasl:
            config["sasl.mechanism"] = self.sasl_mechanism or SASL_MECHANISMS[0]
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = self.sasl_password
        if self.ssl_ca_location:
            config["ssl.ca.location"] = self.ssl_ca_location
        return config


def _password(env: Mapping[str, str]) -> str:
    """``FOLDLINE_KAFKA_SASL_PASSWORD``, or the content of the file ``..._PASSWORD_FILE`` names (not both)."""
    inline = env.get(_PREFIX + "KAFKA_SASL_PASSWORD", "")
    path = env_str(env, "KAFKA_SASL_PASSWORD_FILE", "")
    if not path:
        return inline.strip()
    if inline:
        raise ConfigurationError(f"set {_PREFIX}KAFKA_SASL_PASSWORD or {_PREFIX}KAFKA_SASL_PASSWORD_FILE, not both")
    try:
        password = Path(path).read_text(encoding="utf-8").rstrip("\r\n")  # a Secret's file has no newline
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"{_PREFIX}KAFKA_SASL_PASSWORD_FILE: cannot read {path} ({exc.__class__.__name__})"
        ) from exc
    if not password:
        raise ConfigurationError(f"{_PREFIX}KAFKA_SASL_PASSWORD_FILE: {path} is empty")
    return password


class _Changeable:
    """``with_changes``: a copy with some fields replaced, refusing names the settings do not have."""

    def with_changes(self, **changes: Any) -> Self:
        known = {f.name for f in fields(self)}  # type: ignore[arg-type]
        unknown = set(changes) - known
        if unknown:
            raise ConfigurationError(f"unknown {type(self).__name__} fields: {', '.join(sorted(unknown))}")
        return replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class HandlerSettings(_Changeable):
    """The command handler's knobs; the defaults follow Kafka Streams under exactly-once."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    state_dir: Path = Path(".cache/state")
    store: str = "rocksdb"
    commit_interval_ms: int = 100
    max_batch: int = 2000
    cache_size: int = 20_000
    dedup_window: int = 16
    #: The largest record the handler writes (an event, a snapshot, a dead letter): a command whose events
    #: or snapshot would be larger fails with ``too_large``. Under the broker's default 1 MiB message size.
    max_record_bytes: int = 900_000
    http_port: int = 8080
    instance_id: str = field(default_factory=socket.gethostname)
    #: Static group membership (KIP-345): ``instance_id`` becomes the consumer's ``group.instance.id``, so a
    #: pod that comes back within the session timeout keeps its partitions without a rebalance. Only for
    #: ids that are unique and stable per pod (a StatefulSet's pod names); two live members with one id fence
    #: each other.
    static_membership: bool = False
    #: Warm copies of each commands partition's store that other handler processes keep from the snapshots
    #: changelog (Kafka Streams' ``num.standby.replicas``); 0 keeps none. See ``foldline.handler.standby``.
    standby_replicas: int = 0
    #: Engine processes in this pod (``foldline.handler.workers``); 1: the process is the engine itself.
    #: From the environment: ``FOLDLINE_WORKERS`` (default 1), ``auto`` for the CPUs this process may use.
    workers: int = 1
    #: Transactional producers that take turns, one transaction each (``FOLDLINE_TXN_PRODUCERS``, 1 or 2).
    #: After a commit the coordinator still writes that transaction's markers for a few ms, and the same
    #: producer's next transaction is refused (CONCURRENT_TRANSACTIONS) until they are in; the other producer
    #: starts at once (lower latency at a steady rate, measured: docs/command-handler.md, Latency). 1 by
    #: default: with two, a handler froze in 2 of 3 full make test runs' outage test (docs/reliability.md).
    txn_producers: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        txn_producers = env_int(env, "TXN_PRODUCERS", cls.txn_producers, minimum=1)
        if txn_producers > 2:
            raise ConfigurationError(f"{_PREFIX}TXN_PRODUCERS must be 1 or 2, got {txn_producers}")
        return cls(
            txn_producers=txn_producers,
            # 1 by default: two workers were not yet shown faster than one (docs/command-handler.md).
            workers=(
                available_cpus()
                if env.get("FOLDLINE_WORKERS", "").strip() == "auto"
                else env_int(env, "WORKERS", 1, minimum=1)
            ),
            kafka=KafkaSettings.from_env(env),
            state_dir=Path(env_str(env, "STATE_DIR", str(cls.state_dir))),
            store=env_choice(env, "STORE", "rocksdb", ("rocksdb", "lmdb", "sqlite")),
            commit_interval_ms=env_int(env, "COMMIT_INTERVAL_MS", cls.commit_interval_ms, minimum=1),
            max_batch=env_int(env, "MAX_BATCH", cls.max_batch, minimum=1),
            cache_size=env_int(env, "CACHE_SIZE", cls.cache_size, minimum=0),
            dedup_window=env_int(env, "DEDUP_WINDOW", cls.dedup_window, minimum=1),
            max_record_bytes=env_int(env, "MAX_RECORD_BYTES", cls.max_record_bytes, minimum=65_536),
            http_port=env_int(env, "HTTP_PORT", cls.http_port),
            instance_id=env_str(env, "INSTANCE_ID", socket.gethostname()),
            static_membership=env_bool(env, "STATIC_MEMBERSHIP", False),
            standby_replicas=env_int(env, "STANDBY_REPLICAS", cls.standby_replicas, minimum=0),
        )


@dataclass(frozen=True)
class PolicySettings(_Changeable):
    """The policy worker's knobs (the same variables as the command handler's, where they mean the same)."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    state_dir: Path = Path(".cache/state")
    store: str = "rocksdb"
    commit_interval_ms: int = 100
    max_batch: int = 2000
    http_port: int = 8080
    instance_id: str = field(default_factory=socket.gethostname)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        return cls(
            kafka=KafkaSettings.from_env(env),
            state_dir=Path(env_str(env, "STATE_DIR", str(cls.state_dir))),
            store=env_choice(env, "STORE", "rocksdb", ("rocksdb", "lmdb", "sqlite")),
            commit_interval_ms=env_int(env, "COMMIT_INTERVAL_MS", cls.commit_interval_ms, minimum=1),
            max_batch=env_int(env, "MAX_BATCH", cls.max_batch, minimum=1),
            http_port=env_int(env, "HTTP_PORT", cls.http_port),
            instance_id=env_str(env, "INSTANCE_ID", socket.gethostname()),
        )


@dataclass(frozen=True)
class ProjectorSettings(_Changeable):
    """The projector's knobs. ``database`` is ``sqlite:///path.db`` or ``postgresql://...``."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    database: str = "sqlite:///.cache/projections.db"
    max_batch: int = 5000
    batch_wait_ms: int = 100
    # A rebuilding revision switches once its positions reach end offsets measured at most this long ago.
    catchup_window_ms: int = 2000
    pool_size: int = 4
    http_port: int = 8080
    instance_id: str = field(default_factory=socket.gethostname)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        return cls(
            kafka=KafkaSettings.from_env(env),
            database=env_str(env, "PROJECTION_DATABASE", cls.database),
            max_batch=env_int(env, "PROJECTION_MAX_BATCH", cls.max_batch, minimum=1),
            batch_wait_ms=env_int(env, "PROJECTION_BATCH_WAIT_MS", cls.batch_wait_ms, minimum=1),
            catchup_window_ms=env_int(env, "PROJECTION_CATCHUP_WINDOW_MS", cls.catchup_window_ms, minimum=1),
            pool_size=env_int(env, "PROJECTION_POOL_SIZE", cls.pool_size, minimum=1),
            http_port=env_int(env, "HTTP_PORT", cls.http_port),
            instance_id=env_str(env, "INSTANCE_ID", socket.gethostname()),
        )


@dataclass(frozen=True)
class GatewaySettings(_Changeable):
    """The gateway's knobs. ``token`` (``FOLDLINE_GATEWAY_TOKEN``) never appears in ``repr``.

    An empty token turns authentication off; any other value makes every route except ``/healthz``,
    ``/readyz`` and ``/metrics`` demand ``Authorization: Bearer <token>``.
    """

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    host: str = "0.0.0.0"
    port: int = 8000
    token: str = field(default="", repr=False)
    #: How long ``POST .../commands`` waits for the result by default, and the most a client may ask for.
    command_timeout_s: float = 10.0
    max_command_timeout_s: float = 60.0
    #: How long a read with ``min_version`` waits for the projection by default, and the most allowed.
    read_timeout_s: float = 10.0
    max_read_timeout_s: float = 60.0
    max_body_bytes: int = 1 << 20
    #: A starting replica reads results from this far back, so it can answer for recent commands.
    results_lookback_s: float = 300.0
    #: Results kept in memory for ``GET .../commands/{id}`` (oldest dropped first).
    result_index_size: int = 100_000
    #: The command producer's linger.ms: 5 ms batches a few commands per request at 1,000/s; 1 ms cost
    #: ~100 µs more CPU per command (librdkafka wakes up per message) for ~2 ms less latency.
    producer_linger_ms: int = 5
    view_poll_interval_s: float = 0.5
    sse_heartbeat_s: float = 15.0
    #: Slow clients: a request's headers must arrive within ``header_timeout_s`` of its first byte (or of
    #: the connection), its body within ``body_timeout_s`` of its headers; an idle keep-alive connection
    #: closes after ``keep_alive_s``; past ``max_connections`` open connections new requests get 503.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: float = 5.0
    max_connections: int = 1000
    #: The most one read of a dead-letter topic may take (it answers what it found by then), and how many
    #: such reads (each a Kafka consumer of its own) run at once.
    dead_letters_timeout_s: float = 5.0
    dead_letter_readers: int = 2

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        settings = cls(
            kafka=KafkaSettings.from_env(env),
            host=env_str(env, "GATEWAY_HOST", cls.host),
            port=env_int(env, "GATEWAY_PORT", cls.port),
            token=env.get(_PREFIX + "GATEWAY_TOKEN", "").strip(),
            command_timeout_s=env_float(env, "GATEWAY_COMMAND_TIMEOUT_S", cls.command_timeout_s),
            max_command_timeout_s=env_float(env, "GATEWAY_MAX_COMMAND_TIMEOUT_S", cls.max_command_timeout_s),
            read_timeout_s=env_float(env, "GATEWAY_READ_TIMEOUT_S", cls.read_timeout_s),
            max_read_timeout_s=env_float(env, "GATEWAY_MAX_READ_TIMEOUT_S", cls.max_read_timeout_s),
            max_body_bytes=env_int(env, "GATEWAY_MAX_BODY_BYTES", cls.max_body_bytes, minimum=64),
            results_lookback_s=env_float(env, "GATEWAY_RESULTS_LOOKBACK_S", cls.results_lookback_s),
            result_index_size=env_int(env, "GATEWAY_RESULT_INDEX_SIZE", cls.result_index_size, minimum=1),
            producer_linger_ms=env_int(env, "GATEWAY_LINGER_MS", cls.producer_linger_ms),
            view_poll_interval_s=env_float(env, "GATEWAY_VIEW_POLL_S", cls.view_poll_interval_s),
            sse_heartbeat_s=env_float(env, "GATEWAY_SSE_HEARTBEAT_S", cls.sse_heartbeat_s),
            header_timeout_s=env_float(env, "GATEWAY_HEADER_TIMEOUT_S", cls.header_timeout_s),
            body_timeout_s=env_float(env, "GATEWAY_BODY_TIMEOUT_S", cls.body_timeout_s),
            keep_alive_s=env_float(env, "GATEWAY_KEEP_ALIVE_S", cls.keep_alive_s),
            max_connections=env_int(env, "GATEWAY_MAX_CONNECTIONS", cls.max_connections, minimum=1),
            dead_letters_timeout_s=env_float(env, "GATEWAY_DEAD_LETTERS_TIMEOUT_S", cls.dead_letters_timeout_s),
            dead_letter_readers=env_int(env, "GATEWAY_DEAD_LETTER_READERS", cls.dead_letter_readers, minimum=1),
        )
        settings.check()
        return settings

    def check(self) -> None:
        if self.command_timeout_s > self.max_command_timeout_s:
            raise ConfigurationError(
                f"{_PREFIX}GATEWAY_COMMAND_TIMEOUT_S ({self.command_timeout_s}) exceeds "
                f"{_PREFIX}GATEWAY_MAX_COMMAND_TIMEOUT_S ({self.max_command_timeout_s})"
            )
        if self.read_timeout_s > self.max_read_timeout_s:
            raise ConfigurationError(
                f"{_PREFIX}GATEWAY_READ_TIMEOUT_S ({self.read_timeout_s}) exceeds "
                f"{_PREFIX}GATEWAY_MAX_READ_TIMEOUT_S ({self.max_read_timeout_s})"
            )
        if not 0 <= self.port <= 65535:
            raise ConfigurationError(f"{_PREFIX}GATEWAY_PORT must be a TCP port, got {self.port}")
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s", "dead_letters_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{_PREFIX}GATEWAY_{name.upper()} must be above 0, got {getattr(self, name)}")

    def with_changes(self, **changes: Any) -> Self:
        changed = super().with_changes(**changes)
        changed.check()
        return changed
