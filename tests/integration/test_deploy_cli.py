"""`lakehouse deploy …` as a Kubernetes or compose deployment runs it: against the test
stack's servers, with the credentials mounted as one file per key."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import bcrypt
import pytest
from confluent_kafka.admin import AdminClient

from lakehouse.clients import kafka_config, postgres_connection
from lakehouse.credentials import as_keys

pytestmark = pytest.mark.integration


@pytest.fixture
def mounted(tmp_path, credentials):
    """The stack's credentials as a mounted Secret: one file per key, no home."""
    directory = tmp_path / "credentials"
    directory.mkdir()
    for key, value in as_keys(credentials).items():
        (directory / key).write_text(value)
    env = {
        **os.environ,
        "LAKEHOUSE_CREDENTIALS_DIR": str(directory),
        "LAKEHOUSE_HOME": str(tmp_path / "home"),
    }
    return env


def said(result) -> str:
    """stderr with the console's line wrapping undone."""
    return " ".join(result.stderr.split())


def deploy(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "lakehouse", "deploy", *args], capture_output=True, text=True,
        env=env, timeout=600, check=False,
    )  # fmt: skip


def test_bootstrap_sets_up_every_server_and_runs_again_harmlessly(
    stack, stack_settings, credentials, mounted
):
    for _ in range(2):
        result = deploy(mounted, "bootstrap")
        assert result.returncode == 0, result.stderr[-3000:]
        for part in ("postgres", "minio", "nessie", "kafka"):
            assert f"✓ {part} set up" in said(result)
        assert "✓ serving roles and policies set up" in said(result)
    admin = AdminClient(kafka_config(stack_settings, "admin"))
    topic = admin.list_topics(timeout=10).topics[stack_settings.kafka.topic]
    assert len(topic.partitions) == stack_settings.kafka.partitions
    with postgres_connection(stack_settings, credentials) as conn:
        roles = {r[0] for r in conn.execute("select rolname from pg_roles")}
        tables = conn.execute("select count(*) from registry.devices").fetchone()
    assert {"nessie", "superset", "lakehouse", "trino_reader", "audit_writer"} <= roles
    assert tables is not None


def test_bootstrap_without_a_reachable_server_says_which_and_why(mounted):
    env = {**mounted, "LAKEHOUSE_POSTGRES_HOST": "127.0.0.1", "LAKEHOUSE_POSTGRES_PORT": "9"}
    result = deploy(env, "bootstrap", "--wait", "2")
    assert result.returncode == 1
    assert "waiting for postgres" in said(result)
    assert "postgres did not answer within 2 s" in said(result)


def test_a_secret_missing_keys_is_refused_with_their_names(mounted, tmp_path):
    (tmp_path / "credentials" / "audit-token").unlink()
    result = deploy(mounted, "trino-security", "--out", str(tmp_path / "etc"))
    assert result.returncode == 1
    assert "lacks the credentials audit-token" in said(result)


def test_trino_security_files_hold_hashes_that_match_the_passwords(credentials, mounted, tmp_path):
    out = tmp_path / "etc"
    result = deploy(mounted, "trino-security", "--out", str(out))
    assert result.returncode == 0, result.stderr
    entries = dict(line.split(":", 1) for line in (out / "password.db").read_text().splitlines())
    assert set(entries) >= set(credentials.trino_passwords)
    for name, password in credentials.trino_passwords.items():
        assert password not in (out / "password.db").read_text()
        assert bcrypt.checkpw(password.encode(), entries[name].encode()), name
    for name in ("password.db", "group.txt", "rules.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600
    assert json.loads((out / "rules.json").read_text())["catalogs"]


def test_a_new_secret_has_every_key_once_and_never_overwrites(tmp_path):
    env = {**os.environ, "LAKEHOUSE_HOME": str(tmp_path / "home")}
    manifest = json.loads(deploy(env, "secret", "--name", "mine").stdout)
    keys = deploy(env, "keys").stdout.split()
    assert manifest["metadata"]["name"] == "mine" and sorted(manifest["stringData"]) == sorted(keys)
    target = tmp_path / "files"
    assert deploy(env, "secret", "--dir", str(target)).returncode == 0
    assert sorted(p.name for p in target.iterdir()) == sorted(keys)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in target.iterdir())
    again = deploy(env, "secret", "--dir", str(target))
    assert again.returncode == 1 and "is not empty" in said(again)
