from pathlib import Path

import pytest

from foldline import ConfigurationError, HandlerSettings, KafkaSettings


def test_reads_foldline_environment():
    env = {
        "FOLDLINE_KAFKA_BOOTSTRAP": "k:9092",
        "FOLDLINE_STORE": "sqlite",
        "FOLDLINE_COMMIT_INTERVAL_MS": "5",
        "FOLDLINE_STATE_DIR": "/data",
        "FOLDLINE_INSTANCE_ID": "pod-1",
        "FOLDLINE_KAFKA_GROUP_PROTOCOL": "classic",
        "FOLDLINE_STATIC_MEMBERSHIP": "true",
        "FOLDLINE_STANDBY_REPLICAS": "2",
        "FOLDLINE_TXN_PRODUCERS": "2",
    }
    s = HandlerSettings.from_env(env)
    assert s.kafka.bootstrap_servers == "k:9092" and s.store == "sqlite" and s.commit_interval_ms == 5
    assert s.state_dir == Path("/data") and s.instance_id == "pod-1" and s.kafka.group_protocol == "classic"
    assert s.static_membership is True
    assert HandlerSettings.from_env({}).static_membership is False  # host names need not be unique
    assert s.standby_replicas == 2 and HandlerSettings.from_env({}).standby_replicas == 0
    assert s.txn_producers == 2 and HandlerSettings.from_env({}).txn_producers == 1


def test_secret_never_in_repr():
    s = KafkaSettings.from_env(
        {
            "FOLDLINE_KAFKA_SASL_USERNAME": "u",
            "FOLDLINE_KAFKA_SASL_PASSWORD": "hunter2",
            "FOLDLINE_KAFKA_SASL_MECHANISM": "PLAIN",
            "FOLDLINE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        }
    )
    assert "hunter2" not in repr(s) and "hunter2" not in repr(HandlerSettings(kafka=s))
    assert s.client_config()["sasl.password"] == "hunter2"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FOLDLINE_STORE", "mongo"),
        ("FOLDLINE_COMMIT_INTERVAL_MS", "0"),
        ("FOLDLINE_MAX_BATCH", "many"),
        ("FOLDLINE_KAFKA_SECURITY_PROTOCOL", "carrier-pigeon"),
        ("FOLDLINE_STATIC_MEMBERSHIP", "maybe"),
        ("FOLDLINE_STANDBY_REPLICAS", "-1"),
        ("FOLDLINE_TXN_PRODUCERS", "0"),
        ("FOLDLINE_TXN_PRODUCERS", "3"),
    ],
)
def test_bad_values_are_clear_errors(name, value):
    with pytest.raises(ConfigurationError, match=name):
        HandlerSettings.from_env({name: value})


def test_settings_are_frozen():
    s = HandlerSettings()
    with pytest.raises(AttributeError):
        s.store = "sqlite"  # type: ignore[misc]
    with pytest.raises(ConfigurationError):
        s.with_changes(nope=1)


PW = "s3cr3t-pw"
SCRAM = {
    "FOLDLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "FOLDLINE_KAFKA_SASL_MECHANISM": "scram-sha-512",
    "FOLDLINE_KAFKA_SASL_USERNAME": "foldline",
}


def test_sasl_ssl_maps_to_librdkafka_settings(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    s = KafkaSettings.from_env(
        {**SCRAM, "FOLDLINE_KAFKA_SASL_PASSWORD": "pw", "FOLDLINE_KAFKA_SSL_CA_LOCATION": str(ca)}
    )
    assert s.client_config() == {
        "bootstrap.servers": KafkaSettings.bootstrap_servers,
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "foldline",
        "sasl.password": "pw",
        "ssl.ca.location": str(ca),
    }


def test_the_mechanism_defaults_to_scram_sha_512():
    s = KafkaSettings.from_env(
        {"FOLDLINE_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext", "FOLDLINE_KAFKA_SASL_USERNAME": "u",
         "FOLDLINE_KAFKA_SASL_PASSWORD": "p"}
    )  # fmt: skip
    assert s.client_config()["sasl.mechanism"] == "SCRAM-SHA-512"


def test_the_password_from_a_file(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")
    s = KafkaSettings.from_env({**SCRAM, "FOLDLINE_KAFKA_SASL_PASSWORD_FILE": str(secret)})
    assert s.sasl_password == "from-a-file" and "from-a-file" not in repr(s)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (SCRAM, "needs FOLDLINE_KAFKA_SASL_USERNAME and FOLDLINE_KAFKA_SASL_PASSWORD"),
        ({**SCRAM, "FOLDLINE_KAFKA_SASL_MECHANISM": "GSSAPI", "FOLDLINE_KAFKA_SASL_PASSWORD": PW}, "MECHANISM"),
        ({"FOLDLINE_KAFKA_SASL_USERNAME": "u", "FOLDLINE_KAFKA_SASL_PASSWORD": PW}, "never sends them"),
        ({"FOLDLINE_KAFKA_SSL_CA_LOCATION": "/etc/hostname"}, "does not use TLS"),
        ({**SCRAM, "FOLDLINE_KAFKA_SASL_PASSWORD": PW, "FOLDLINE_KAFKA_SSL_CA_LOCATION": "/nope/ca.crt"}, "no file"),
        ({**SCRAM, "FOLDLINE_KAFKA_SASL_PASSWORD_FILE": "/nope/password"}, "cannot read /nope/password"),
        (
            {**SCRAM, "FOLDLINE_KAFKA_SASL_PASSWORD": PW, "FOLDLINE_KAFKA_SASL_PASSWORD_FILE": "/etc/hostname"},
            "not both",
        ),
    ],
)
def test_security_settings_that_cannot_work_are_refused(env, message):
    with pytest.raises(ConfigurationError, match=message) as error:
        KafkaSettings.from_env(env)
    assert PW not in str(error.value)


def test_an_empty_password_file_is_refused(tmp_path):
    empty = tmp_path / "password"
    empty.write_text("\n")
    with pytest.raises(ConfigurationError, match="is empty"):
        KafkaSettings.from_env({**SCRAM, "FOLDLINE_KAFKA_SASL_PASSWORD_FILE": str(empty)})
