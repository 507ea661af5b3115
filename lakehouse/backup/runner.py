"""`lakehouse backup` and `lakehouse restore`: the order that keeps a backup consistent."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from lakehouse.backup import kafka_log, objects
from lakehouse.backup.archive import (
    HOME_FILES,
    KafkaPartition,
    Manifest,
    new_backup,
    objects_dir,
    private_dir,
    read_manifest,
    resolve,
    write_manifest,
)
from lakehouse.backup.databases import DATABASES, GLOBALS, Postgres
from lakehouse.bronze_offsets import committed_offsets
from lakehouse.clients import iceberg_catalog, kafka_config, postgres_connection
from lakehouse.config import Settings
from lakehouse.contracts import READINGS, REJECTED
from lakehouse.credentials import Credentials, credentials_path, load
from lakehouse.errors import BackupError, MaintenanceLockedError
from lakehouse.maintain import records
from lakehouse.nessie import NessieClient
from lakehouse.s3 import s3_client
from lakehouse.stack.kafka_acl import ADMIN_PRINCIPAL
from lakehouse.stack.manager import Stack

# The bucket key that reads and writes every object of the warehouse.
S3_KEY = "maintain"
LOCK_WAIT_SECONDS = 600.0
DUMP_ATTEMPTS = 10
# What keeps running while a restore puts the data in place: the servers that hold it.
DATA_SERVERS = ("postgres", "minio", "kafka")
Progress = Callable[[str], None]


class Backup:
    def __init__(self, settings: Settings, credentials: Credentials, progress: Progress) -> None:
        self.settings = settings
        self.credentials = credentials
        self.progress = progress

    def run(self, root: Path) -> tuple[Path, Manifest]:
        started = datetime.now(UTC)
        backup = new_backup(root, started)
        with postgres_connection(self.settings, self.credentials) as lock:
            lock.autocommit = True
            self._lock(lock)
            # Read before Nessie's dump: bronze may only have moved on since, so the
            # messages exported from here include every one the dump's bronze lacks.
            committed = self._committed()
            pg = Postgres(self.settings, self.credentials)
            dumps = private_dir(backup / "postgres")
            pg.dump_roles(dumps / GLOBALS)
            main_hash = self._dump_catalog(pg, dumps)
            # Where the export stops, fixed before the registry's dump: every message up
            # to here was reserved before it, so the receipts hold every batch exported.
            kafka = kafka_config(self.settings, ADMIN_PRINCIPAL, credentials=self.credentials)
            ends = kafka_log.log_ends(kafka, self.settings.kafka.topic)
            for database in DATABASES[1:]:
                pg.dump(database, dumps / f"{database}.dump")
                self.progress(f"PostgreSQL: {database} dumped")
            stored = self._copy_objects(backup)
            home = self._copy_home(backup)
            exported = private_dir(backup / "kafka")
            partitions = kafka_log.export(
                kafka, self.settings.kafka.topic, committed, ends, exported, self.progress
            )
            for path in exported.iterdir():
                os.chmod(path, 0o600)
        manifest = Manifest(
            name=backup.name, started_at=started, finished_at=datetime.now(UTC),
            main_hash=main_hash, bucket=self.settings.minio.bucket, objects=stored,
            databases=list(DATABASES), home_files=home, topic=self.settings.kafka.topic,
            partitions=partitions,
        )  # fmt: skip
        write_manifest(backup, manifest)
        return backup, manifest

    def _lock(self, conn: object) -> None:
        """The maintenance lock: no garbage collection deletes a file meanwhile."""
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        waiting = False
        while True:
            try:
                records.acquire_lock(conn)
                return
            except MaintenanceLockedError:
                if time.monotonic() > deadline:
                    raise
                if not waiting:
                    self.progress("waiting for the maintenance pass to finish")
                    waiting = True
                time.sleep(2)

    def _committed(self) -> dict[int, int]:
        """Per partition, the offset bronze resumes from (the lower of its two tables')."""
        catalog = iceberg_catalog(self.settings, self.credentials, s3_key="reader")
        positions: list[dict[int, int]] = []
        for identifier in (READINGS, REJECTED):
            if catalog.table_exists(identifier):
                properties = catalog.load_table(identifier).properties
                positions.append(committed_offsets(properties).get(self.settings.kafka.topic, {}))
        if len(positions) < 2:
            return {}
        return {p: min(positions[0][p], positions[1][p])
                for p in positions[0].keys() & positions[1].keys()}  # fmt: skip

    def _dump_catalog(self, pg: Postgres, dumps: Path) -> str | None:
        """Nessie's database, at a commit of main named when main held still around it."""
        with NessieClient(self.settings, self.credentials) as nessie:
            for _ in range(DUMP_ATTEMPTS):
                before = nessie.reference("main").hash
                pg.dump("nessie", dumps / "nessie.dump")
                after = nessie.reference("main").hash
                if before == after:
                    self.progress(f"PostgreSQL: nessie dumped at main {after[:12]}")
                    return after
        self.progress("PostgreSQL: nessie dumped (main kept moving; its commit is unnamed)")
        return None

    def _copy_objects(self, backup: Path) -> dict[str, int]:
        client = s3_client(self.settings, self.credentials, S3_KEY)
        listed = objects.list_objects(client, self.settings.minio.bucket)
        store = private_dir(objects_dir(backup))
        total = sum(listed.values())
        self.progress(f"objects: {len(listed):,} ({total / 2**20:,.1f} MiB) to keep")
        copied = objects.download(
            client, self.settings.minio.bucket, listed, store,
            lambda done, n: self.progress(f"objects: {done:,} of {n:,} new ones copied"),
        )  # fmt: skip
        self.progress(f"objects: {copied / 2**20:,.1f} MiB copied, the rest already kept")
        return listed

    def _copy_home(self, backup: Path) -> list[str]:
        kept = []
        for name in HOME_FILES:
            source = self.settings.home / name
            if source.exists():
                target = backup / "home" / name
                private_dir(target.parent)
                shutil.copyfile(source, target)
                os.chmod(target, 0o600)
                kept.append(name)
        return kept


class Restore:
    def __init__(self, settings: Settings, console: Console, progress: Progress) -> None:
        self.settings = settings
        self.console = console
        self.progress = progress

    def run(self, source: Path) -> Manifest:
        backup = resolve(source)
        manifest = read_manifest(backup)
        if credentials_path(self.settings).exists():
            raise BackupError(
                f"{self.settings.home} already holds a lakehouse; a restore builds a new one",
                fix="restore into an empty LAKEHOUSE_HOME",
            )
        if manifest.bucket != self.settings.minio.bucket:
            raise BackupError(f"the backup is of bucket {manifest.bucket!r}, this stack's is "
                              f"{self.settings.minio.bucket!r}",
                              fix=f"set LAKEHOUSE_MINIO_BUCKET={manifest.bucket}")  # fmt: skip
        self._place_home(backup, manifest)
        stack = Stack(self.settings, self.console)
        self.progress("starting a stack with the backup's credentials")
        stack.up()
        held = [name for name in reversed(stack.names()) if name not in DATA_SERVERS]
        for name in held:
            stack.hold(name)
        self.progress(f"stopped while the data is put back: {', '.join(held)}")
        credentials = load(self.settings)
        pg = Postgres(self.settings, credentials)
        pg.restore_roles(backup / "postgres" / GLOBALS)
        for database in manifest.databases:
            pg.restore(database, backup / "postgres" / f"{database}.dump")
            self.progress(f"PostgreSQL: {database} restored")
        forgotten = forget_receipts_past(
            self.settings, credentials, manifest.topic, manifest.partitions
        )
        if forgotten:
            self.progress(f"registry: {forgotten} receipts of batches accepted after the backup "
                          "forgotten (their devices' retries are accepted again)")  # fmt: skip
        client = s3_client(self.settings, credentials, S3_KEY)
        objects.upload(
            client, manifest.bucket, manifest.objects, objects_dir(backup, manifest.format),
            lambda done, n: self.progress(f"objects: {done:,} of {n:,} uploaded"),
            objects.legacy_path if manifest.format == 1 else objects.object_path,
        )  # fmt: skip
        replayed = kafka_log.replay(
            kafka_config(self.settings, ADMIN_PRINCIPAL, credentials=credentials),
            manifest.topic, manifest.partitions, backup / "kafka", self.progress,
        )  # fmt: skip
        self.progress(f"Kafka: {replayed:,} messages back at their offsets")
        for name in reversed(held):
            stack.release(name)
        return manifest

    def _place_home(self, backup: Path, manifest: Manifest) -> None:
        for name in manifest.home_files:
            target = self.settings.home / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(backup / "home" / name, target)
            os.chmod(target, HOME_FILES.get(name, 0o600))


def forget_receipts_past(
    settings: Settings, credentials: Credentials, topic: str, partitions: list[KafkaPartition]
) -> int:
    """Delete the receipts of envelopes beyond the backup's Kafka messages.

    Batches accepted while the registry was dumped, after the export's end was fixed:
    the restored stack has neither their readings nor their envelopes, so a retry must
    be accepted as new rather than answered with a receipt for readings it lacks."""
    ends = {p.partition: p.end for p in partitions}
    with postgres_connection(settings, credentials) as conn:
        deleted = conn.execute(
            """
            delete from registry.upload_batches
            where receipt is not null and receipt->>'topic' = %s
              and (receipt->>'offset')::bigint >= coalesce(
                  (%s::jsonb ->> (receipt->>'partition'))::bigint, 0)
            """,
            (topic, json.dumps({str(p): end for p, end in ends.items()})),
        ).rowcount
        conn.commit()
    return deleted
