"""Which projection database URLs the operator connects to on a Projection author's behalf."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from foldline_operator.config import OperatorConfig
from foldline_operator.databases import DatabasePolicy, local_address

DNS = {
    "db.team-a.svc.cluster.local": ["10.96.0.12"],
    "rebind.example": ["127.0.0.1"],
    "metadata.example": ["169.254.169.254"],
    "mixed.example": ["10.0.0.5", "::1"],
    "pg.example.com": ["203.0.113.7"],
}


def resolve(host: str) -> Sequence[str]:
    if host not in DNS:
        raise OSError(f"[Errno -2] Name or service not known: {host}")
    return DNS[host]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:pw@db.team-a.svc.cluster.local:5432/views",
        "postgres://app@db.team-a.svc.cluster.local/views?schema=orders&sslmode=require",
        "postgresql://app@10.96.0.12/views",
        "postgresql://app@[2001:db8::5]:5432/views",
        "postgresql://app@db.team-a.svc.cluster.local:5432,pg.example.com:5432/views?target_session_attrs=read-write",
    ],
)
def test_postgresql_to_hosts_outside_the_pod_is_accepted(url: str) -> None:
    assert DatabasePolicy().check(url, resolve) is None


@pytest.mark.parametrize(
    ("url", "reason", "words"),
    [
        ("sqlite:////var/lib/foldline/views.db", "SqliteNotRead", "does not read SQLite"),
        ("sqlite:///views.db", "SqliteNotRead", "does not read SQLite"),
        ("mysql://root@db.example/x", "DatabaseURLRefused", "'mysql'"),
        ("file:///etc/passwd", "DatabaseURLRefused", "'file'"),
        ("/var/run/postgresql", "DatabaseURLRefused", "(none)"),
        ("postgresql://app@localhost/views", "DatabaseHostRefused", "own pod"),
        ("postgresql://app@127.0.0.1:5432/views", "DatabaseHostRefused", "loopback"),
        ("postgresql://app@127.8.9.1/views", "DatabaseHostRefused", "loopback"),
        ("postgresql://app@[::1]/views", "DatabaseHostRefused", "loopback"),
        ("postgresql://app@[::ffff:127.0.0.1]/views", "DatabaseHostRefused", "loopback"),
        ("postgresql://app@0.0.0.0/views", "DatabaseHostRefused", "unspecified"),
        ("postgresql://app@169.254.169.254/views", "DatabaseHostRefused", "link-local"),
        ("postgresql://app@metadata.example/views", "DatabaseHostRefused", "link-local"),
        ("postgresql://app@rebind.example/views", "DatabaseHostRefused", "loopback"),
        ("postgresql://app@mixed.example/views", "DatabaseHostRefused", "loopback"),
        ("postgresql:///views", "DatabaseHostRefused", "unix sockets"),
        ("postgresql://app@/views", "DatabaseHostRefused", "unix sockets"),
        ("postgresql://app@%2Fvar%2Frun%2Fpostgresql/views", "DatabaseHostRefused", "unix sockets"),
        ("postgresql://app@pg.example.com,/views", "DatabaseHostRefused", "unix sockets"),
        ("postgresql://app@pg.example.com,127.0.0.1/views", "DatabaseHostRefused", "loopback"),
        ("postgresql://app@pg.example.com/views?host=/var/run/postgresql", "DatabaseURLRefused", "host"),
        ("postgresql://app@pg.example.com/views?hostaddr=127.0.0.1", "DatabaseURLRefused", "hostaddr"),
        ("postgresql://app@pg.example.com/views?passfile=/etc/shadow", "DatabaseURLRefused", "passfile"),
        ("postgresql://app@pg.example.com/views?service=local", "DatabaseURLRefused", "service"),
        ("postgresql://app@pg.example.com/views?sslrootcert=/var/run/secrets/x", "DatabaseURLRefused", "sslrootcert"),
        ("postgresql://app@nowhere.invalid/views", "DatabaseHostUnresolved", "does not resolve"),
    ],
)
def test_urls_into_the_operator_pod_are_refused_with_a_reason(url: str, reason: str, words: str) -> None:
    refusal = DatabasePolicy().check(url, resolve)
    assert refusal is not None, url
    assert refusal.reason == reason
    assert words in refusal.message


def test_a_refusal_never_echoes_the_password() -> None:
    refusal = DatabasePolicy().check("postgresql://app:s3cret@127.0.0.1/views", resolve)
    assert refusal is not None and "s3cret" not in refusal.message


def test_admin_named_hosts_are_the_only_ones_and_may_be_loopback() -> None:
    policy = DatabasePolicy(hosts=("127.0.0.1", "*.svc.cluster.local"))
    assert policy.check("postgresql://app@127.0.0.1:5432/views", resolve) is None
    assert policy.check("postgresql://app@db.team-a.svc.cluster.local/views", resolve) is None
    refused = policy.check("postgresql://app@pg.example.com/views", resolve)
    assert refused is not None and refused.reason == "DatabaseHostRefused"
    assert "not one the operator may reach" in refused.message
    # Naming hosts does not lift the parameter rules.
    params = policy.check("postgresql://app@127.0.0.1/views?host=/tmp", resolve)
    assert params is not None and params.reason == "DatabaseURLRefused"


def test_sqlite_only_inside_the_admin_named_directory() -> None:
    policy = DatabasePolicy(sqlite_dir="/srv/dev/views")
    assert policy.check("sqlite:////srv/dev/views/a.db", resolve) is None
    assert policy.check("sqlite:////srv/dev/views/sub/b.db?mode=ro", resolve) is None
    for url in (
        "sqlite:////srv/dev/views/../secrets.db",
        "sqlite:////srv/dev/views-other/a.db",
        "sqlite:////etc/passwd",
        "sqlite::memory:",
    ):
        refusal = policy.check(url, resolve)
        assert refusal is not None and refusal.reason == "SqliteNotRead", url


def test_local_address() -> None:
    assert local_address("10.1.2.3") == ""
    assert local_address("fe80::1%eth0") == "a link-local address"
    assert local_address("224.0.0.1") == "a multicast address"


def test_policy_from_the_environment() -> None:
    config = OperatorConfig.from_env(
        {"FOLDLINE_OPERATOR_DATABASE_HOSTS": " 127.0.0.1, *.svc ", "FOLDLINE_OPERATOR_SQLITE_DIR": "/tmp/views"}
    )
    assert config.database_policy == DatabasePolicy(("127.0.0.1", "*.svc"), "/tmp/views")
    assert OperatorConfig.from_env({}).database_policy == DatabasePolicy()
