"""The development broker's secured listener: its TLS material (made by the real openssl) and its config."""

from __future__ import annotations

import stat
import subprocess

from foldline.dev.kafka import DevKafka
from foldline.dev.tls import make_certificates, new_password


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True).stdout


def test_the_broker_certificate_is_signed_by_the_ca_for_its_address(tmp_path):
    ca, store = make_certificates(tmp_path / "secure", "10.1.2.3")
    assert "OK" in openssl("verify", "-CAfile", str(ca), str(tmp_path / "secure" / "broker.crt"))
    names = openssl("x509", "-in", str(store), "-noout", "-ext", "subjectAltName")
    assert "IP Address:10.1.2.3" in names and "IP Address:127.0.0.1" in names and "DNS:localhost" in names
    pem = store.read_text()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----") and "-----BEGIN CERTIFICATE-----" in pem  # PKCS#8 + chain
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert sorted(p.name for p in (tmp_path / "secure").iterdir()) == ["broker.crt", "broker.pem", "ca.crt"]


def test_a_password_file_only_its_owner_reads(tmp_path):
    password = new_password(tmp_path / "user.password")
    assert len(password) >= 24 and (tmp_path / "user.password").read_text() == password + "\n"
    assert stat.S_IMODE((tmp_path / "user.password").stat().st_mode) == 0o600


def test_the_broker_config_has_the_sasl_ssl_listener_unless_turned_off(tmp_path):
    broker = DevKafka(cache_dir=tmp_path, port=29092, sasl_port=29099)
    broker.home.mkdir(parents=True)
    broker._write_config()
    config = dict(line.split("=", 1) for line in broker.config_file.read_text().splitlines())
    assert config["listeners"].endswith(",SASL_SSL://127.0.0.1:29099")
    assert config["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092,SASL_SSL://127.0.0.1:29099"
    assert config["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert config["listener.name.sasl_ssl.ssl.keystore.location"] == str(broker.secure_dir / "broker.pem")
    off = DevKafka(cache_dir=tmp_path, port=29192, sasl_port=0)
    off.home.mkdir(parents=True)
    off._write_config()
    assert "SASL" not in off.config_file.read_text().replace("SASL_SSL:SASL_SSL", "")
