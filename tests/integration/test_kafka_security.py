"""Kafka over SASL/SCRAM-SHA-512 with TLS, against the development broker's real SASL_SSL listener.

A command handler and a projector (child processes) and a gateway (in this process) reach the broker only
through the secured listener, with credentials: a command goes in, its result and its view row come out.
Clients without credentials, with a wrong password, or not trusting the broker's certificate are refused
with ``KafkaAuthenticationError`` within seconds. No password appears in any log, metric, response or repr.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from foldline import KafkaAuthenticationError
from foldline.aggregate import AggregateSpec
from foldline.clients import check_access
from foldline.dev.kafka import DevKafka
from foldline.dev.tls import SecureListener
from foldline.gateway import Gateway, GatewayServer
from foldline.gateway.server import free_port
from foldline.gateway.views import ViewService
from foldline.projection import load_projection, open_target
from foldline.projection.wiring import build_projector
from foldline.settings import GatewaySettings, HandlerSettings, KafkaSettings, ProjectorSettings
from tests.conftest import REPO, aggregate_path
from tests.kafka_support import start_handler

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}
VIEW = "foldline.examples.invoices.views:InvoiceList"
WRONG = "not-the-password-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def secure(kafka_bootstrap: str) -> SecureListener:
    """The session broker's SASL_SSL listener (fails, with the reason, if the broker runs without one)."""
    return DevKafka().secure_listener()


def sasl(secure: SecureListener, **changes: Any) -> KafkaSettings:
    kafka = KafkaSettings(
        bootstrap_servers=secure.bootstrap,
        security_protocol="sasl_ssl",
        sasl_mechanism=secure.mechanism,
        sasl_username=secure.username,
        sasl_password=secure.password,
        ssl_ca_location=str(secure.ca_location),
    )
    return dataclasses.replace(kafka, **changes)


def wait_until(what: str, probe, timeout: float = 90.0, alive=lambda: True):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if probe():
                return
        except httpx.TransportError:
            pass
        assert alive(), f"{what}: the process exited"
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.1)


def test_handler_projector_and_gateway_work_over_sasl_ssl(secure, invoices_aggregate, start_projector, tmp_path, capfd):
    password = secure.password
    cls = invoices_aggregate(partitions=2)  # topics made on the plain listener; everything else goes secured
    # The handler gets the password inline, the projector from a file (as a mounted Secret).
    inline = {k: v for k, v in secure.env().items() if k != "FOLDLINE_KAFKA_SASL_PASSWORD_FILE"}
    handler_port = free_port()
    handler = start_handler(
        secure.bootstrap,
        aggregate_path(cls),
        tmp_path / "state",
        "secure-h",
        tmp_path,
        extra_env={**inline, "FOLDLINE_KAFKA_SASL_PASSWORD": password},
        http_port=handler_port,
    )
    database = f"sqlite:///{tmp_path / 'views.db'}"
    projector = start_projector(VIEW, database, aggregate_name=cls.name, name="secure-p", extra_env=secure.env())
    gateway = Gateway(
        [AggregateSpec(cls())],
        GatewaySettings(kafka=sasl(secure), host="127.0.0.1", command_timeout_s=30.0),
        ViewService(database, {"invoice-list": cls.name}, opener=open_target),
    )
    try:
        with GatewayServer(gateway) as server, httpx.Client(base_url=server.url, timeout=60) as client:
            handler_http = httpx.Client(base_url=f"http://127.0.0.1:{handler_port}", timeout=10)
            wait_until("handler ready", lambda: handler_http.get("/readyz").status_code == 200, alive=handler.alive)
            r = client.post(
                f"/aggregates/{cls.name}/commands",
                json={"aggregate_id": "inv-s1", "type": "CreateInvoice", "payload": CREATE},
            )
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "accepted" and r.json()["version"] == 1
            rows = client.get(
                "/views/invoice-list/rows", params={"aggregate_id": "inv-s1", "min_version": 1, "timeout": 60}
            )
            assert rows.status_code == 200, rows.text
            assert [row["customer"] for row in rows.json()["rows"]] == ["ACME"]
            exposed = [
                r.text,
                rows.text,
                client.get("/metrics").text,
                handler_http.get("/metrics").text,
                client.get("/openapi.json").text,
            ]
            assert f'aggregate="{cls.name}",status="accepted"' in exposed[3]  # the handler's real metrics
            handler_http.close()
    finally:
        assert handler.terminate() == 0, handler.log.read_text()
        projector.terminate()
        assert projector.wait(60) == 0
    logs = handler.log.read_text() + (tmp_path / "projector-secure-p.log").read_text()
    captured = capfd.readouterr()
    logs += captured.out + captured.err
    assert "settings" in logs and "gateway started" in logs  # the logs that would show a leak are there
    for text in [logs, *exposed]:
        assert password not in text
    assert password not in repr(gateway.settings) and "sasl_password" not in repr(gateway.settings)


@pytest.mark.parametrize(
    ("case", "changes"),
    [
        ("wrong password", {"sasl_password": WRONG}),
        ("unknown user", {"sasl_username": "mallory", "sasl_password": WRONG}),
        ("no credentials", {"security_protocol": "plaintext", "sasl_mechanism": "", "sasl_username": "",
                            "sasl_password": "", "ssl_ca_location": ""}),
        ("TLS without a login", {"security_protocol": "ssl", "sasl_mechanism": "", "sasl_username": "",
                                 "sasl_password": ""}),
        ("untrusted certificate", {"ssl_ca_location": "/etc/ssl/certs/ca-certificates.crt"}),
    ],
)  # fmt: skip
def test_refused_clients_fail_fast_with_a_clear_error(secure, invoices_aggregate, tmp_path, case, changes):
    cls = invoices_aggregate(partitions=1)
    kafka = sasl(secure, **changes)
    spec = AggregateSpec(cls())
    with pytest.raises(KafkaAuthenticationError) as handler_error:
        check_access(kafka)  # what the handler asks before its clients connect (it then waits, not ready)
    with pytest.raises(KafkaAuthenticationError):
        build_projector(
            load_projection(VIEW, aggregate_name=cls.name),
            ProjectorSettings(kafka=kafka, database=f"sqlite:///{tmp_path / 'v.db'}"),
        )
    with pytest.raises(KafkaAuthenticationError):
        Gateway([spec], GatewaySettings(kafka=kafka, host="127.0.0.1"))
    message = str(handler_error.value)
    assert secure.bootstrap in message and WRONG not in message and secure.password not in message
    expected = {
        "wrong password": "SASL authentication error",
        "unknown user": "SASL authentication error",
        "no credentials": "hangs up during the handshake",
        "TLS without a login": "hangs up during the handshake",
        "untrusted certificate": "certificate verify failed",
    }[case]
    assert expected in message


def test_a_handler_process_with_a_wrong_password_stays_up_not_ready_with_the_reason(
    secure, invoices_aggregate, tmp_path
):
    """A refused login is not an outage, but the handler does not exit either: it stays up (live, not
    ready), logs the broker's reason without the password, and keeps probing with its backoff."""
    cls = invoices_aggregate(partitions=1)
    port = free_port()
    env = {
        **os.environ,
        **secure.env(),
        "FOLDLINE_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "wrong"),
        "FOLDLINE_STATE_DIR": str(tmp_path / "state"),
        "FOLDLINE_HTTP_PORT": str(port),
        "FOLDLINE_HTTP_HOST": "127.0.0.1",
        "FOLDLINE_LOG_FORMAT": "json",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    (tmp_path / "wrong").write_text(WRONG + "\n")
    log_path = tmp_path / "handler.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "foldline.cli", "command-handler", "--aggregate", aggregate_path(cls)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while "kafka refused this handler" not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.5)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for _ in range(20):  # ten seconds of probes after the refusal: up, live, never ready
                assert proc.poll() is None, log_path.read_text()
                assert http.get("/healthz").status_code == 200
                assert http.get("/readyz").status_code == 503
                time.sleep(0.5)
    finally:
        proc.terminate()
        assert proc.wait(60) == 0, log_path.read_text()
    output = log_path.read_text()
    assert "SASL authentication error" in output
    assert WRONG not in output and secure.password not in output


def test_the_password_file_is_read_and_never_shown(secure, tmp_path: Path):
    env = secure.env()
    kafka = KafkaSettings.from_env(env)
    assert kafka.sasl_password == secure.password
    assert secure.password not in repr(kafka) and secure.password not in repr(HandlerSettings(kafka=kafka))
    assert secure.password not in repr(secure)
    from foldline.clients import check_access

    assert check_access(kafka) is True


def test_the_operator_reaches_kafka_with_the_secret_and_names_a_refusal(secure, unique_name, kafka_admin):
    """The operator's Kafka side, from a Secret's keys as the EventSourcedAggregate names them: topics made
    over SASL_SSL (CA inline); a wrong password is ``KafkaAuthenticationError`` (the status reason
    ``KafkaAuthenticationFailed``), its message without the password."""
    from foldline.topics import aggregate_topics
    from foldline_operator.kafka import KafkaPort, client_config

    secret = {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": secure.mechanism,
        "sasl.username": secure.username,
        "sasl.password": secure.password,
        "ca.crt": secure.ca_location.read_text(),
    }
    port = KafkaPort(timeout=5.0)
    name = unique_name("sec")
    report = port.ensure_topics(
        client_config(secure.bootstrap, secret), aggregate_topics(name, 2, 1), allow_growth=False
    )
    assert len(report.created) == 5
    assert f"{name}.commands" in kafka_admin.list_topics(timeout=10).topics  # seen on the plain listener too
    wrong = client_config(secure.bootstrap, {**secret, "sasl.password": WRONG})
    with pytest.raises(KafkaAuthenticationError, match="SASL authentication error") as error:
        port.ensure_topics(wrong, aggregate_topics(name, 2, 1), allow_growth=False)
    assert WRONG not in str(error.value) and secure.password not in str(error.value)


def test_secure_env_prints_the_settings_with_the_password_as_a_file(secure):
    done = subprocess.run(
        [sys.executable, "-m", "foldline.dev.kafka", "secure-env"], capture_output=True, text=True, check=True
    )
    printed = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert printed["FOLDLINE_KAFKA_BOOTSTRAP"] == secure.bootstrap
    assert printed["FOLDLINE_KAFKA_SASL_PASSWORD_FILE"] == str(secure.password_file)
    assert secure.password not in done.stdout + done.stderr
    assert KafkaSettings.from_env(printed).sasl_password == secure.password
