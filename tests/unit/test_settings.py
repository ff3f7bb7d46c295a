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
    }
    s = HandlerSettings.from_env(env)
    assert s.kafka.bootstrap_servers == "k:9092" and s.store == "sqlite" and s.commit_interval_ms == 5
    assert s.state_dir == Path("/data") and s.instance_id == "pod-1" and s.kafka.group_protocol == "classic"
    assert s.static_membership is True
    assert HandlerSettings.from_env({}).static_membership is False  # host names need not be unique


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
