"""Which projection database URLs the operator itself connects to: pure rules, no I/O.

The operator reads a view's catalog from the database a Projection's Secret names, so any author of a
Projection chooses where the operator connects. It connects only to PostgreSQL on a host outside its own
pod: a ``postgresql://`` URL with a host name or address that is not loopback, link-local (cloud metadata
endpoints), unspecified or multicast, without unix sockets and without libpq parameters that read files
or name other hosts (only those in ``PARAMETERS``). A SQLite file is never read: it lives in the
projector's pod, not the operator's, unless the operator's admin names a directory (``sqlite_dir``, for
local development where both share a disk). An admin may also name the hosts it may reach (``hosts``):
then only those, and a named host is trusted even when it is loopback.

Refused URLs are never opened; the Projection's ``RevisionActive`` condition says why (status Unknown).
"""

from __future__ import annotations

import ipaddress
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

#: libpq/foldline URL parameters the operator passes on; any other (host, hostaddr, service, passfile,
#: sslrootcert, sslkey, options, ...) could point it at a local socket or a file of its own pod.
PARAMETERS = frozenset({"schema", "sslmode", "connect_timeout", "application_name", "target_session_attrs"})
POSTGRES_SCHEMES = ("postgresql", "postgres")
SQLITE_PREFIX = "sqlite:///"

#: Addresses a host name resolves to (``socket.getaddrinfo`` in the operator, a table in tests).
Resolver = Callable[[str], Sequence[str]]


@dataclass(frozen=True)
class Refusal:
    reason: str
    message: str


@dataclass(frozen=True)
class DatabasePolicy:
    #: Host names or addresses the operator may reach (``*.example`` matches subdomains); empty: any host
    #: that passes the address rules.
    hosts: tuple[str, ...] = ()
    #: SQLite files inside this directory are read (local development only); None: SQLite is never read.
    sqlite_dir: str | None = None

    def check(self, url: str, resolve: Resolver) -> Refusal | None:
        """None when the operator may connect to ``url``, else why not (never echoes credentials)."""
        if url.startswith("sqlite:"):
            return self._sqlite(url)
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            return Refusal("DatabaseURLRefused", f"the database URL does not parse: {exc}")
        if parts.scheme not in POSTGRES_SCHEMES:
            scheme = parts.scheme or "(none)"
            return Refusal("DatabaseURLRefused", f"scheme {scheme!r}: the operator connects only to postgresql:// URLs")
        bad = sorted({key for key, _ in parse_qsl(parts.query, keep_blank_values=True)} - PARAMETERS)
        if bad:
            return Refusal(
                "DatabaseURLRefused",
                f"URL parameter(s) {', '.join(bad)} not accepted; allowed: {', '.join(sorted(PARAMETERS))}",
            )
        for host in _hosts(parts.netloc):
            refusal = self._host(host, resolve)
            if refusal is not None:
                return refusal
        return None

    def _host(self, host: str, resolve: Resolver) -> Refusal | None:
        if not host or host.startswith("/"):
            return Refusal(
                "DatabaseHostRefused", "no host or a socket path: the operator's own unix sockets are refused"
            )
        if self.hosts:
            if any(_matches(host, allowed) for allowed in self.hosts):
                return None  # the operator's admin named it
            return Refusal("DatabaseHostRefused", f"host {host} is not one the operator may reach")
        if host.lower() == "localhost" or host.lower().endswith(".localhost"):
            return Refusal("DatabaseHostRefused", f"host {host} is the operator's own pod")
        try:
            addresses: Sequence[str] = [str(ipaddress.ip_address(host))]
        except ValueError:
            try:
                addresses = resolve(host)
            except OSError as exc:
                return Refusal("DatabaseHostUnresolved", f"host {host} does not resolve: {exc}")
        for address in addresses:
            why = local_address(address)
            if why:
                return Refusal("DatabaseHostRefused", f"host {host} is {why} ({address})")
        return None

    def _sqlite(self, url: str) -> Refusal | None:
        if self.sqlite_dir is None or not url.startswith(SQLITE_PREFIX):
            return Refusal(
                "SqliteNotRead",
                "the operator does not read SQLite files (they live in the projector's pod): the view's "
                "status is unknown; use PostgreSQL to have it reported",
            )
        path = posixpath.normpath("/" + url[len(SQLITE_PREFIX) :].split("?", 1)[0].lstrip("/"))
        root = posixpath.normpath(self.sqlite_dir)
        if posixpath.commonpath([path, root]) != root:
            return Refusal("SqliteNotRead", f"the operator reads SQLite files only under {root}")
        return None


def local_address(address: str) -> str:
    """What makes ``address`` one the operator must not connect to on a CR author's behalf ("" if none)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for flag, why in (
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_unspecified, "the unspecified address"),
        (ip.is_multicast, "a multicast address"),
    ):
        if flag:
            return why
    return ""


def _hosts(netloc: str) -> list[str]:
    """The hosts of a (possibly multi-host, ``h1:5432,h2:5432``) libpq netloc, decoded, without ports; an
    empty one means libpq's default, a unix socket."""
    hostlist = netloc.rpartition("@")[2]
    out = []
    for item in hostlist.split(","):
        item = unquote(item)
        if item.startswith("["):
            out.append(item[1:].partition("]")[0])
        else:
            out.append(item.rpartition(":")[0] if item.count(":") == 1 else item)
    return out


def _matches(host: str, allowed: str) -> bool:
    host, allowed = host.lower(), allowed.lower()
    if allowed.startswith("*."):
        return host.endswith(allowed[1:])
    return host == allowed
