from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lakehouse.backup.archive import (
    KafkaPartition,
    Manifest,
    new_backup,
    objects_dir,
    read_manifest,
    resolve,
    write_manifest,
)
from lakehouse.backup.databases import _created_role, _statements
from lakehouse.errors import BackupError

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def manifest(name: str) -> Manifest:
    return Manifest(
        name=name, started_at=T0, finished_at=T0, main_hash="ab" * 32, bucket="lakehouse",
        objects={"warehouse/a/data/1.parquet": 10, "warehouse/a/metadata/1.json": 5},
        databases=["nessie", "lakehouse", "superset"], home_files=["credentials.json"],
        topic="readings",
        partitions=[KafkaPartition(partition=0, first=7, end=10, committed=7),
                    KafkaPartition(partition=1, first=3, end=3, committed=3)],
    )  # fmt: skip


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_backup_directory_and_its_manifest_are_private_and_read_back(tmp_path):
    backup = new_backup(tmp_path / "backups", T0)
    write_manifest(backup, manifest(backup.name))
    assert backup.name == "20261201T120000Z"
    assert (mode(tmp_path / "backups"), mode(backup), mode(backup / "manifest.json")) == (
        0o700, 0o700, 0o600,
    )  # fmt: skip
    back = read_manifest(backup)
    assert back == manifest(backup.name)
    assert (back.object_bytes, back.messages) == (15, 3)
    assert objects_dir(backup) == tmp_path / "backups" / "objects-2"
    assert objects_dir(backup, 1) == tmp_path / "backups" / "objects"


def test_the_directory_of_backups_stands_for_its_newest_complete_one(tmp_path):
    root = tmp_path / "backups"
    older = new_backup(root, T0)
    write_manifest(older, manifest(older.name))
    newer = new_backup(root, T0.replace(hour=13))
    write_manifest(newer, manifest(newer.name))
    new_backup(root, T0.replace(hour=14))  # never finished: no manifest
    assert resolve(root) == newer
    assert resolve(older) == older
    with pytest.raises(BackupError, match="holds no complete backup"):
        resolve(tmp_path / "empty")


def test_two_backups_in_the_same_second_are_refused(tmp_path):
    new_backup(tmp_path, T0)
    with pytest.raises(BackupError, match="already exists"):
        new_backup(tmp_path, T0)


def test_the_roles_script_is_split_into_statements_and_creations_named():
    script = (
        "--\n-- PostgreSQL database cluster dump\n--\n\\restrict abc\n"
        "SET default_transaction_read_only = off;\n\n"
        'CREATE ROLE "tenant_a";\n'
        "ALTER ROLE \"tenant_a\" WITH NOSUPERUSER LOGIN PASSWORD 'SCRAM-SHA-256$x';\n"
        "CREATE ROLE lakehouse;\n\\unrestrict abc\n"
    )
    statements = _statements(script)
    assert statements == [
        "SET default_transaction_read_only = off;",
        'CREATE ROLE "tenant_a";',
        "ALTER ROLE \"tenant_a\" WITH NOSUPERUSER LOGIN PASSWORD 'SCRAM-SHA-256$x';",
        "CREATE ROLE lakehouse;",
    ]
    assert [_created_role(s) for s in statements] == [None, "tenant_a", None, "lakehouse"]
