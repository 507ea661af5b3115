"""Backup under load, restore into a new home: the same catalog, tables, dashboards and
receipts, Kafka's unconsumed messages at their offsets, and ingestion resumes exactly once.

The restored stack is a second one of its own (ports + 12000), started by the restore
itself and purged at the end.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from lakehouse import registry
from lakehouse.backup.archive import MANIFEST, Manifest, read_manifest, resolve
from lakehouse.backup.databases import Postgres
from lakehouse.clients import (
    iceberg_catalog,
    kafka_config,
    nessie_api_url,
    nessie_token,
    postgres_connection,
)
from lakehouse.config import Settings, environment_variables, isolated_environment
from lakehouse.credentials import load
from lakehouse.nessie import NessieClient
from tests.integration.conftest import (
    PER_BATCH,
    Device,
    assert_accounted,
    lakehouse,
    wait_for_device,
)

pytestmark = pytest.mark.integration

RESTORED_FIRST_PORT = 21_200
LAYERS = ("silver", "gold", "platinum", "internal")


@pytest.fixture
def restored_home(stack_settings):
    """The environment of a second stack in a new home; purged after the test. Beside
    the test stack's: the stack's unprivileged user must be able to reach it."""
    home = stack_settings.home.with_name(f"{stack_settings.home.name}-restored")
    env = {**os.environ, **isolated_environment(home, RESTORED_FIRST_PORT)}
    lakehouse("stack", "down", "--purge", env=env, timeout=300)  # what an aborted run left
    yield home, env
    lakehouse("stack", "down", "--purge", env=env, timeout=300)


def tables_at(settings: Settings, ref: str) -> dict[str, list[dict]]:
    """Every row of every table transform runs publish (silver and up, the pipeline's
    work tables included) on a Nessie reference."""
    catalog = iceberg_catalog(settings, load(settings), ref, s3_key="reader")
    rows = {}
    for layer in LAYERS:
        for identifier in catalog.list_tables(layer):
            name = ".".join(identifier)
            rows[name] = sorted(catalog.load_table(name).scan().to_arrow().to_pylist(), key=repr)
    return rows


def branch_at(settings: Settings, name: str, commit: str) -> None:
    response = httpx.post(
        f"{nessie_api_url(settings)}/trees", params={"name": name, "type": "BRANCH"},
        json={"type": "BRANCH", "name": "main", "hash": commit}, timeout=30,
        headers={"Authorization": f"Bearer {nessie_token(load(settings))}"},
    )  # fmt: skip
    response.raise_for_status()


def dashboards(settings: Settings) -> list[str]:
    with Postgres(settings, load(settings)).connect("superset") as conn:
        return [row[0] for row in conn.execute("select slug from dashboards order by slug")]


def receipts(settings: Settings, device: str) -> set[str]:
    with postgres_connection(settings, load(settings)) as conn:
        rows = conn.execute(
            "select batch_id from registry.upload_batches "
            "where device_id = %s and receipt is not null",
            (device,),
        )
        return {row[0] for row in rows}


def private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_a_backup_under_load_restores_into_a_new_home_that_resumes_exactly_once(
    stack, stack_settings, credentials, tmp_path, restored_home
):
    device_id = f"backup-{uuid.uuid4().hex[:8]}"
    with postgres_connection(stack_settings, credentials) as conn:
        conn.autocommit = True
        token = registry.register(
            conn, device_id, tenant="tenant-backup", site="site-backup", lat=47.4, lon=8.5,
            since=datetime.now(UTC) - timedelta(days=1),
        )  # fmt: skip
    gateway = f"http://127.0.0.1:{stack_settings.gateway.port}/v1/readings"
    device = Device(gateway, token, batch_prefix="backup")
    device.thread.start()
    backups = tmp_path / "backups"
    consumers: list[str] = []
    try:
        while device.sent < 10 and device.error is None:
            time.sleep(0.2)
        assert wait_for_device(stack_settings, device_id, 10 * PER_BATCH)[0] >= 10 * PER_BATCH
        # A first run publishes every layer (on a new stack there is none yet), so the
        # backup's commit has silver, gold and platinum tables to compare.
        first = lakehouse("transform", "--quiet")
        assert first.returncode == 0, first.stderr[-3000:]
        # The consumers pause, so the backup finds readings that only Kafka holds; a
        # transform publishes while it is taken, and the device keeps sending.
        consumers = [name for name in stack.names() if name.startswith("consumer-")]
        for name in consumers:
            stack.hold(name)
        held_at = device.sent
        while device.sent < held_at + 5 and device.error is None:
            time.sleep(0.2)
        transform = subprocess.Popen(
            [sys.executable, "-m", "lakehouse", "transform", "--quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(3)
        backup = lakehouse("backup", "--to", str(backups))
        assert backup.returncode == 0, backup.stderr[-3000:]
        _, transform_err = transform.communicate(timeout=900)
        assert transform.returncode == 0, transform_err[-3000:]
    finally:
        for name in consumers:
            stack.release(name)
        device.finish.set()
        device.thread.join(330)
    assert device.error is None, device.error
    sent = device.sent

    # What was kept, privately.
    path = resolve(backups)
    manifest: Manifest = read_manifest(path)
    assert manifest.main_hash is not None
    assert private(backups) and private(path) and private(path / MANIFEST)
    assert all(private(p) for p in path.rglob("*"))
    assert sorted(manifest.databases) == ["lakehouse", "nessie", "superset"]
    assert "credentials.json" in manifest.home_files
    in_kafka = {p.partition: (p.first, p.end) for p in manifest.partitions}
    assert len(in_kafka) == stack_settings.kafka.partitions
    assert manifest.messages >= 5  # envelopes, one a batch
    assert any(p.first > 0 for p in manifest.partitions)
    kept = receipts(stack_settings, device_id)  # the source's, now a superset of the backup's

    # Restore into a new home, with its own ports.
    home, env = restored_home
    restore = lakehouse("restore", "--from", str(backups), env=env, timeout=1800)
    assert restore.returncode == 0, restore.stderr[-3000:]
    with environment_variables({k: v for k, v in env.items() if k.startswith("LAKEHOUSE_")}):
        restored = Settings()
    assert restored.home == home and restored.postgres.port != stack_settings.postgres.port

    # Main is the backup's commit, and every table on it is what the source had there.
    with NessieClient(restored) as nessie:
        assert nessie.reference("main").hash == manifest.main_hash
    branch = f"backup_check_{uuid.uuid4().hex[:8]}"
    branch_at(stack_settings, branch, manifest.main_hash)
    try:
        source_tables = tables_at(stack_settings, branch)
    finally:
        with NessieClient(stack_settings) as nessie:
            nessie.delete_branch(branch)
    restored_tables = tables_at(restored, "main")
    assert {"silver.readings", "gold.fct_device_hourly", "platinum.device_features"} <= set(
        source_tables
    )
    assert restored_tables.keys() == source_tables.keys()
    for name, rows in source_tables.items():
        assert restored_tables[name] == rows, name
    assert dashboards(restored) == dashboards(stack_settings) != []

    # Kafka's messages are back at their offsets: the log starts where the backup did.
    consumer = Consumer({**kafka_config(restored, "admin"), "group.id": "backup-check"})
    try:
        for partition, (first, end) in in_kafka.items():
            low, high = consumer.get_watermark_offsets(
                TopicPartition(restored.kafka.topic, partition), timeout=30, cached=False
            )
            assert (low, high) == (first, end), partition
    finally:
        consumer.close()

    # The restored registry holds the receipts of a prefix of the batches sent, and the
    # consumers take up where bronze left off.
    restored_receipts = receipts(restored, device_id)
    accepted = len(restored_receipts)
    assert accepted >= 10 and restored_receipts <= kept
    assert restored_receipts == {f"backup-{n}" for n in range(accepted)}
    assert wait_for_device(restored, device_id, accepted * PER_BATCH)[0] >= accepted * PER_BATCH

    # The device carries on against the restored gateway, retrying what it sent since
    # the backup: a batch the backup holds is answered from its receipt; one whose
    # envelope the backup holds without its receipt is found in Kafka (200); the rest are
    # accepted again (202). Every reading ends up in bronze once, all accounted for.
    again = Device(f"http://127.0.0.1:{restored.gateway.port}/v1/readings", token,
                   batch_prefix="backup", start=device.start)  # fmt: skip
    with httpx.Client(timeout=15) as client:
        assert again.send(client, 0) == 200
        statuses = [again.send(client, batch) for batch in range(accepted, sent + 2)]
    assert set(statuses) <= {200, 202} and statuses[-2:] == [202, 202]
    total = (sent + 2) * PER_BATCH
    assert wait_for_device(restored, device_id, total)[0] == total
    counts = assert_accounted(restored, load(restored), device_id)
    assert (counts.receipted, counts.bronze) == (total, total)
