"""The layout of a backup directory and its manifest.

    DIR/objects-2/<key's path>  the bucket's objects, shared by every backup in DIR
                                (an object's key never changes content, so an object
                                already there with the same size is not copied again;
                                lakehouse.backup.objects says how a key becomes a path;
                                format 1 kept them in DIR/objects, keys as paths)
    DIR/<name>/manifest.json    what the backup holds; written last
    DIR/<name>/postgres/        the roles (globals.sql) and one dump per database
    DIR/<name>/home/            credentials, Trino users and the stack's CA
    DIR/<name>/kafka/           unconsumed messages, one JSON line each

Everything is private to its owner: directories 0700, files 0600.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from lakehouse.errors import BackupError
from lakehouse.private_files import write_private

MANIFEST = "manifest.json"
FORMAT = 2
# Format 1 kept object keys as plain paths; it is still read and restored.
READABLE_FORMATS = (1, 2)
# Files of a home that a restored stack needs as they were: the same secrets (Superset's
# key decrypts what its database holds, MinIO's key what the bucket holds), the same
# analysts, and the same CA, which devices and clients already trust. With the mode each
# has in a home (every file is 0600 in the backup).
HOME_FILES = {
    "credentials.json": 0o600,
    "trino/users.json": 0o600,
    "tls/ca.pem": 0o644,
    "tls/ca.key": 0o600,
}


class KafkaPartition(BaseModel):
    """Messages [first, end) of one partition, exported in order."""

    partition: int
    first: int
    end: int
    # Where bronze stood; messages before `first` that it had not consumed had already
    # expired from Kafka when the backup was made.
    committed: int


class Manifest(BaseModel):
    format: int = FORMAT
    name: str
    started_at: datetime
    finished_at: datetime
    # Nessie's main in the dump: None only when main moved during every attempt.
    main_hash: str | None
    bucket: str
    objects: dict[str, int]
    databases: list[str]
    home_files: list[str]
    topic: str
    partitions: list[KafkaPartition]

    @property
    def object_bytes(self) -> int:
        return sum(self.objects.values())

    @property
    def messages(self) -> int:
        return sum(p.end - p.first for p in self.partitions)


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def new_backup(root: Path, now: datetime | None = None) -> Path:
    """A fresh, private directory for one backup under `root`."""
    private_dir(root)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    path = root / stamp
    if path.exists():
        raise BackupError(f"{path} already exists", fix="wait a second and run it again")
    return private_dir(path)


def objects_dir(backup: Path, format: int = FORMAT) -> Path:
    return backup.parent / ("objects" if format == 1 else f"objects-{format}")


def write_manifest(backup: Path, manifest: Manifest) -> None:
    write_private(backup / MANIFEST, manifest.model_dump_json(indent=2))


def resolve(path: Path) -> Path:
    """The complete backup `path` names: a backup's directory, or DIR for its newest."""
    if (path / MANIFEST).is_file():
        return path
    newest = latest(path)
    if newest is None:
        raise BackupError(
            f"{path} holds no complete backup (no {MANIFEST})",
            fix="pass a backup's directory, DIR/<name>, or DIR itself for its newest",
        )
    return newest


def read_manifest(backup: Path) -> Manifest:
    manifest = Manifest.model_validate_json((backup / MANIFEST).read_text())
    if manifest.format not in READABLE_FORMATS:
        raise BackupError(
            f"{backup} is in backup format {manifest.format}, which this version cannot read",
            fix=f"restore it with the version that made it (this one reads {READABLE_FORMATS})",
        )
    return manifest


def latest(root: Path) -> Path | None:
    """The newest complete backup under `root`, if `root` holds backups."""
    if not root.is_dir():
        return None
    complete = sorted(p for p in root.iterdir() if (p / MANIFEST).is_file())
    return complete[-1] if complete else None
