from __future__ import annotations

import base64
import json
import stat

import pytest
from pydantic import SecretStr

from lakehouse.config import MinioSettings, Settings
from lakehouse.credentials import (
    DATABASE_ROLES,
    KAFKA_PRINCIPALS,
    TRINO_PRINCIPALS,
    as_keys,
    credentials_path,
    from_directory,
    load,
    load_or_create,
)
from lakehouse.errors import ConfigError


def test_generated_once_private_and_stable(tmp_path):
    settings = Settings(home=tmp_path)
    first = load_or_create(settings)
    path = credentials_path(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create(settings) == first
    assert load(settings) == first
    secrets = [first.minio_root_password, first.postgres_superuser_password,
               *first.database_passwords.values(), *first.trino_passwords.values(),
               first.trino_shared_secret, *first.kafka_passwords.values(),
               first.minio_kms_key]  # fmt: skip
    assert len(set(secrets)) == len(secrets)
    assert all(len(secret) >= 32 for secret in secrets)
    assert set(first.database_passwords) == {*DATABASE_ROLES, "trino_reader", "audit_writer"}
    assert set(first.trino_passwords) == set(TRINO_PRINCIPALS)
    assert set(first.kafka_passwords) == set(KAFKA_PRINCIPALS)
    assert len(base64.b64decode(first.minio_kms_key, validate=True)) == 32


def test_a_file_from_an_older_version_gains_the_new_secrets_once(tmp_path):
    settings = Settings(home=tmp_path)
    first = load_or_create(settings)
    path = credentials_path(settings)
    old = json.loads(path.read_text())
    del (
        old["trino_passwords"],
        old["trino_shared_secret"],
        old["database_passwords"]["trino_reader"],
        old["kafka_passwords"],
        old["minio_kms_key"],
    )
    path.write_text(json.dumps(old))
    upgraded = load_or_create(settings)
    assert upgraded.minio_root_password == first.minio_root_password
    assert set(upgraded.trino_passwords) == set(TRINO_PRINCIPALS)
    assert "trino_reader" in upgraded.database_passwords and upgraded.trino_shared_secret
    assert set(upgraded.kafka_passwords) == set(KAFKA_PRINCIPALS)
    assert len(base64.b64decode(upgraded.minio_kms_key)) == 32
    assert load_or_create(settings) == upgraded
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_supplied_secret_wins_over_generated(tmp_path):
    generated = load_or_create(Settings(home=tmp_path))
    supplied = Settings(
        home=tmp_path, minio=MinioSettings(root_password=SecretStr("mine-12345678"))
    )
    creds = load_or_create(supplied)
    assert creds.minio_root_password == "mine-12345678"
    assert creds.postgres_superuser_password == generated.postgres_superuser_password


def test_two_homes_get_different_secrets(tmp_path):
    a = load_or_create(Settings(home=tmp_path / "a"))
    b = load_or_create(Settings(home=tmp_path / "b"))
    assert a.minio_root_password != b.minio_root_password


def test_load_without_setup_says_what_to_run(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(Settings(home=tmp_path))
    assert "has not been set up" in info.value.message
    assert info.value.fix is not None and "lakehouse stack up" in info.value.fix


def test_corrupt_file_is_a_clear_error(tmp_path):
    settings = Settings(home=tmp_path)
    credentials_path(settings).write_text("{not json")
    with pytest.raises(ConfigError, match="not a valid credentials file"):
        load(settings)


def test_kafka_clients_sign_in_unless_security_is_off(tmp_path):
    from lakehouse.clients import kafka_config

    secure = Settings(home=tmp_path)
    credentials = load_or_create(secure)
    config = kafka_config(secure, "ingest", credentials=credentials)
    assert config["security.protocol"] == "SASL_PLAINTEXT"
    assert config["sasl.mechanisms"] == "SCRAM-SHA-512"
    assert config["sasl.username"] == "ingest"
    assert config["sasl.password"] == credentials.kafka_passwords["ingest"]
    open_settings = Settings(home=tmp_path, security=False)
    assert kafka_config(open_settings, "ingest", credentials=credentials) == {
        "bootstrap.servers": f"127.0.0.1:{open_settings.kafka.port}"
    }


def test_a_mounted_secret_directory_gives_the_same_credentials(tmp_path, monkeypatch):
    stored = load_or_create(Settings(home=tmp_path / "home"))
    mounted = tmp_path / "secret"
    mounted.mkdir()
    for key, value in as_keys(stored).items():
        (mounted / key).write_text(value + "\n")  # kubectl-made files may end in a newline
    assert "database-passwords.nessie" in as_keys(stored)
    assert from_directory(mounted) == stored
    monkeypatch.setenv("LAKEHOUSE_CREDENTIALS_DIR", str(mounted))
    assert load(Settings(home=tmp_path / "elsewhere")) == stored


def test_a_secret_directory_missing_keys_names_them(tmp_path):
    stored = load_or_create(Settings(home=tmp_path / "home"))
    mounted = tmp_path / "secret"
    mounted.mkdir()
    for key, value in as_keys(stored).items():
        if key not in ("audit-token", "kafka-passwords.gateway"):
            (mounted / key).write_text(value)
    with pytest.raises(
        ConfigError, match=r"lacks the credentials kafka-passwords\.gateway, audit-token"
    ):
        from_directory(mounted)
