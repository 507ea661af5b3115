from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from lakehouse.config import Settings, is_loopback
from lakehouse.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("LAKEHOUSE_"):
            monkeypatch.delenv(key)


def test_defaults_bind_loopback_with_distinct_ports():
    settings = Settings()
    assert settings.host == "127.0.0.1"
    ports = settings.ports()
    assert len(set(ports.values())) == len(ports) == 15
    assert ports["nessie management"] != 9000  # Quarkus' default would collide with MinIO
    assert settings.kafka.partitions == 6
    assert settings.namespaces == ("bronze", "silver", "gold", "platinum", "internal")


def test_environment_overrides_each_service(monkeypatch, tmp_path):
    monkeypatch.setenv("LAKEHOUSE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("LAKEHOUSE_TRINO_PORT", "18080")
    monkeypatch.setenv("LAKEHOUSE_KAFKA_PARTITIONS", "12")
    monkeypatch.setenv("LAKEHOUSE_MINIO_ROOT_PASSWORD", "supplied-secret")
    settings = Settings()
    assert settings.home == tmp_path / "state"
    assert settings.trino.port == 18080
    assert settings.kafka.partitions == 12
    assert settings.minio.root_password is not None
    assert settings.minio.root_password.get_secret_value() == "supplied-secret"
    assert "supplied-secret" not in repr(settings)


def test_colliding_ports_name_both_services(monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_TRINO_PORT", "9000")
    with pytest.raises(ConfigError) as info:
        Settings()
    assert info.value.message == "trino and minio are both configured for port 9000"
    assert info.value.fix is not None and "LAKEHOUSE_<SERVICE>_PORT" in info.value.fix


def test_port_out_of_range_is_refused(monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_KAFKA_PORT", "70000")
    with pytest.raises(ConfigError, match="kafka port 70000 is outside 1-65535"):
        Settings()


def test_zero_partitions_is_a_validation_error(monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_KAFKA_PARTITIONS", "0")
    with pytest.raises(ValidationError, match="partitions"):
        Settings()


@pytest.mark.parametrize(
    ("variable", "value"), [("LAKEHOUSE_HOST", "0.0.0.0"), ("LAKEHOUSE_GATEWAY_HOST", "192.0.2.7")]
)
def test_security_off_is_refused_off_loopback(monkeypatch, variable, value):
    monkeypatch.setenv("LAKEHOUSE_SECURITY", "false")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        Settings()
    assert info.value.message == (
        f"security is off, yet {variable} is {value}: every server would be open to that network"
    )


def test_security_is_on_unless_turned_off_on_loopback(monkeypatch):
    assert Settings().security is True
    monkeypatch.setenv("LAKEHOUSE_SECURITY", "false")
    assert Settings().security is False
    assert Settings().to_env()["LAKEHOUSE_SECURITY"] == "false"


def test_environment_variables_are_restored_after_the_block(monkeypatch):
    import os

    from lakehouse.config import environment_variables

    monkeypatch.setenv("LAKEHOUSE_TRINO_PORT", "18080")
    with environment_variables({"LAKEHOUSE_TRINO_PORT": "28080", "LAKEHOUSE_HOME": "/x"}):
        assert Settings().trino.port == 28080
        assert os.environ["LAKEHOUSE_HOME"] == "/x"
    assert os.environ["LAKEHOUSE_TRINO_PORT"] == "18080"
    assert "LAKEHOUSE_HOME" not in os.environ


def test_each_server_can_be_reached_at_a_host_of_its_own(monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_POSTGRES_HOST", "db.internal")
    monkeypatch.setenv("LAKEHOUSE_KAFKA_BOOTSTRAP_SERVERS", "k-0:9092,k-1:9092")
    monkeypatch.setenv("LAKEHOUSE_MINIO_ENDPOINT", "https://s3.eu-west-1.amazonaws.com")
    settings = Settings()
    assert settings.server_host("postgres") == "db.internal"
    assert settings.server_host("nessie") == settings.host == "127.0.0.1"
    assert settings.kafka_bootstrap() == "k-0:9092,k-1:9092"
    assert settings.s3_endpoint() == "https://s3.eu-west-1.amazonaws.com"
    monkeypatch.delenv("LAKEHOUSE_KAFKA_BOOTSTRAP_SERVERS")
    monkeypatch.setenv("LAKEHOUSE_KAFKA_HOST", "kafka")
    assert Settings().kafka_bootstrap() == f"kafka:{settings.kafka.port}"


def test_an_isolated_stack_moves_every_port_and_keeps_them_below_the_ephemeral_range():
    from lakehouse.config import (
        EPHEMERAL_PORTS_START,
        environment_variables,
        isolated_environment,
    )

    defaults = Settings().to_env()
    port_variables = {k for k in defaults if k.endswith("_PORT")}
    environment = isolated_environment(Path("/x"), 21_000)
    ports = {k: int(v) for k, v in environment.items() if k.endswith("_PORT")}
    assert set(ports) == port_variables  # none left on a default a user's stack holds
    assert sorted(ports.values()) == list(range(21_000, 21_000 + len(ports)))
    assert ports["LAKEHOUSE_POSTGRES_PORT"] == 21_000
    assert ports["LAKEHOUSE_TRINO_PORT"] == 21_005
    assert max(ports.values()) < EPHEMERAL_PORTS_START
    with environment_variables(environment):
        assert Settings().trino.port == 21_005


@pytest.mark.parametrize("first_port", [80, 32_760, 40_000])
def test_an_isolated_stack_refuses_ports_it_could_not_rely_on(first_port):
    from lakehouse.config import isolated_environment

    with pytest.raises(ConfigError, match=r"must lie between 1024 and 32767"):
        isolated_environment(Path("/x"), first_port)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("192.168.1.20", False), ("::", False), ("lakehouse.lan", False)],
)  # fmt: skip
def test_only_loopback_addresses_count_as_loopback(host, loopback):
    assert is_loopback(host) is loopback
