"""Self-signed TLS material and SCRAM credentials for the development broker's secured listener.

Made with the ``openssl`` command line (no Python crypto dependency): a CA, and a broker key and
certificate signed by it whose subjectAltName covers the listener's address, so clients verify the
broker's name as in production (librdkafka checks it by default). Nothing here is for production use.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path

from foldline.errors import ConfigurationError

#: The one SCRAM mechanism the development broker enables.
MECHANISM = "SCRAM-SHA-512"
USERNAME = "foldline"
INSTALL_HINT = "the development broker's secured listener needs the openssl command: apt-get install openssl"


@dataclass(frozen=True)
class SecureListener:
    """Where and how a client reaches the development broker's SASL_SSL listener.

    The password stays in ``password_file`` (mode 0600); ``password`` reads it and never appears in
    ``repr``.
    """

    bootstrap: str
    ca_location: Path
    username: str
    password_file: Path = field(repr=False)
    mechanism: str = MECHANISM

    @property
    def password(self) -> str:
        return self.password_file.read_text(encoding="utf-8").strip()

    def env(self) -> dict[str, str]:
        """The ``FOLDLINE_KAFKA_*`` variables of a foldline process using this listener (no secret inline)."""
        return {
            "FOLDLINE_KAFKA_BOOTSTRAP": self.bootstrap,
            "FOLDLINE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "FOLDLINE_KAFKA_SASL_MECHANISM": self.mechanism,
            "FOLDLINE_KAFKA_SASL_USERNAME": self.username,
            "FOLDLINE_KAFKA_SASL_PASSWORD_FILE": str(self.password_file),
            "FOLDLINE_KAFKA_SSL_CA_LOCATION": str(self.ca_location),
        }


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False, cwd=cwd)
    if done.returncode != 0:
        raise ConfigurationError(f"openssl {args[0]} failed:\n{done.stdout}{done.stderr}")


def make_certificates(directory: Path, host: str) -> tuple[Path, Path]:
    """A fresh CA (``ca.crt``) and the broker's PEM key store (``broker.pem``: PKCS#8 key + certificate).

    Returns (ca.crt, broker.pem). The CA's key is deleted once it has signed: nothing else is ever signed.
    """
    if shutil.which("openssl") is None:
        raise ConfigurationError(INSTALL_HINT)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, mode=0o700)
    names = {"DNS:localhost", "IP:127.0.0.1"}
    try:
        ip_address(host)
        names.add(f"IP:{host}")
    except ValueError:
        names.add(f"DNS:{host}")
    (directory / "broker.ext").write_text(
        f"subjectAltName={','.join(sorted(names))}\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n"
    )
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
        "-subj", "/CN=foldline development CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    _openssl("req", *ec, "-keyout", "broker.key", "-out", "broker.csr", "-subj", f"/CN={host}", cwd=directory)
    _openssl(
        "x509", "-req", "-in", "broker.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "broker.crt", "-days", "3650", "-extfile", "broker.ext",
        cwd=directory,
    )  # fmt: skip
    # Kafka's PEM key store: the unencrypted PKCS#8 key followed by the certificate chain, in one file.
    store = directory / "broker.pem"
    store.write_text((directory / "broker.key").read_text() + (directory / "broker.crt").read_text())
    store.chmod(0o600)
    for leftover in ("ca.key", "ca.srl", "broker.key", "broker.csr", "broker.ext"):
        (directory / leftover).unlink(missing_ok=True)
    return directory / "ca.crt", store


def new_password(path: Path) -> str:
    """A fresh random password, written to ``path`` with mode 0600."""
    password = secrets.token_urlsafe(24)
    path.touch(mode=0o600)
    path.write_text(password + "\n", encoding="utf-8")
    return password
