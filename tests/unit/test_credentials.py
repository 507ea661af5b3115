from __future__ import annotations

import stat

import pytest
from pydantic import SecretStr

from lakehouse.config import MinioSettings, Settings
from lakehouse.credentials import DATABASE_ROLES, credentials_path, load, load_or_create
from lakehouse.errors import ConfigError


def test_generated_once_private_and_stable(tmp_path):
    settings = Settings(home=tmp_path)
    first = load_or_create(settings)
    path = credentials_path(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create(settings) == first
    assert load(settings) == first
    secrets = [first.minio_root_password, first.postgres_superuser_password,
               *first.database_passwords.values()]  # fmt: skip
    assert len(set(secrets)) == len(secrets)
    assert all(len(secret) >= 32 for secret in secrets)
    assert set(first.database_passwords) == set(DATABASE_ROLES)


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
