"""`lakehouse reconcile` on a real pipeline: gateway, Kafka, the bronze consumer and
the transform, in a namespace and topic of their own.

A clean run is accounted for exactly once at every stage; a bronze file's readings
removed behind the pipeline's back and an envelope produced a second time outside the
gateway are both found, down to the exact readings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from lakehouse_testing.bronze_writer import create_environment, drop_environment
from lakehouse_testing.gateway_process import start_gateway
from lakehouse_testing.lake import device_counts, free_port

from lakehouse import registry
from lakehouse.clients import iceberg_catalog, kafka_config, postgres_connection, trino_connection
from lakehouse.nessie import NessieClient
from lakehouse.reconcile.collect import Reconciler
from lakehouse.reconcile.model import Report, Window
from lakehouse.transform.runner import TransformRunner
from tests.integration.conftest import consumer_command, stop_consumer

pytestmark = pytest.mark.integration

PER_BATCH = 40


@dataclass
class Pipeline:
    settings: Any
    credentials: Any
    prefix: str
    topic: str
    url: str
    tenant: str
    consumer: subprocess.Popen[bytes] | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)

    def post(self, device: str, batch: int) -> dict[str, Any]:
        """Batch number `batch` of `device`: PER_BATCH readings, seqs batch*PER_BATCH+1 …"""
        now = datetime.now(UTC) - timedelta(minutes=5)
        readings = [
            {"seq": batch * PER_BATCH + i + 1, "metric": "temperature", "value": 20.0 + i % 7,
             "ts": (now + timedelta(seconds=i)).isoformat()}
            for i in range(PER_BATCH)
        ]  # fmt: skip
        response = httpx.post(
            f"{self.url}/v1/readings", json=readings, timeout=30,
            headers={"Authorization": f"Bearer {self.tokens[device]}",
                     "Idempotency-Key": f"{device}-{batch}"},
        )  # fmt: skip
        assert response.status_code == 202, response.text
        self.sent[device] = self.sent.get(device, 0) + PER_BATCH
        return response.json()

    def wait_for_bronze(self, device: str, rows: int) -> None:
        deadline = time.monotonic() + 120
        table = f"{self.prefix}bronze.readings"
        while device_counts(self.settings, device, table)[0] < rows:
            assert time.monotonic() < deadline, f"{device} never reached {rows} bronze rows"
            time.sleep(1)

    def start_consumer(self, log_path: Path) -> None:
        with log_path.open("ab") as log:
            self.consumer = subprocess.Popen(
                consumer_command(self.topic, f"g-{self.topic}", "--max-age", "1"),
                env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def transform(self) -> None:
        report = TransformRunner(self.settings, self.credentials, quiet=True).run()
        assert report.outcome == "published", report.error

    def reconcile(self, **window: Any) -> Report:
        return Reconciler(self.settings, self.credentials).run(Window(**window))

    def cli(self, *args: str) -> tuple[int, dict[str, Any]]:
        done = subprocess.run(
            [sys.executable, "-m", "lakehouse", "reconcile", "--json", *args],
            capture_output=True, text=True, timeout=300, env={**os.environ, **self.env},
        )  # fmt: skip
        return done.returncode, json.loads(done.stdout)


@pytest.fixture
def pipeline(stack, stack_settings, credentials, unique, topic_factory, tmp_path) -> Iterator:
    prefix = f"r{unique}_"
    topic = topic_factory(partitions=2)
    env = {
        "LAKEHOUSE_TRANSFORM_SCHEMA_PREFIX": prefix,
        "LAKEHOUSE_INGEST_NAMESPACE": f"{prefix}bronze",
        "LAKEHOUSE_KAFKA_TOPIC": topic,
        "LAKEHOUSE_SERVING_PUBLISH_AFTER_TRANSFORM": "false",
    }
    settings = stack_settings.model_copy(deep=True)
    settings.transform.schema_prefix = prefix
    settings.ingest.namespace = f"{prefix}bronze"
    settings.kafka.topic = topic
    settings.serving.publish_after_transform = False
    create_environment(iceberg_catalog(settings, credentials, s3_key="ingest"), prefix)
    port = free_port()
    gateway = start_gateway(port, tmp_path / "gateway.log", **env)
    made = Pipeline(settings, credentials, prefix, topic, f"http://127.0.0.1:{port}",
                    tenant=f"rt-{unique}", env=env)  # fmt: skip
    made.start_consumer(tmp_path / "consumer.log")
    with postgres_connection(settings, credentials) as conn:
        conn.autocommit = True
        registry.ensure_schema(conn)
        for n in range(2):
            device = f"rc{n}-{unique}"
            made.tokens[device] = registry.register(
                conn, device, tenant=made.tenant, site=f"rs-{unique}", lat=1.0, lon=2.0,
                since=datetime.now(UTC) - timedelta(days=1),
            )  # fmt: skip
    try:
        yield made
    finally:
        gateway.terminate()
        gateway.wait(30)
        if made.consumer is not None and made.consumer.poll() is None:
            stop_consumer(made.consumer)
        drop_environment(iceberg_catalog(settings, credentials, s3_key="ingest"), prefix)


def test_a_clean_pipeline_is_accounted_for_and_a_loss_and_a_duplicate_are_named(pipeline):
    first, second = sorted(pipeline.tokens)
    for batch in range(3):
        pipeline.post(first, batch)
        pipeline.post(second, batch)
    pipeline.wait_for_bronze(first, 3 * PER_BATCH)
    pipeline.wait_for_bronze(second, 3 * PER_BATCH)

    # Before the transform: everything waits for it, nothing is missing.
    waiting = pipeline.reconcile()
    assert waiting.accounted, [d.describe() for d in waiting.discrepancies]
    assert (waiting.devices[first].receipted, waiting.devices[first].bronze,
            waiting.devices[first].transform_pending) == (120, 120, 120)  # fmt: skip

    pipeline.transform()
    clean = pipeline.reconcile()
    assert clean.accounted, [d.describe() for d in clean.discrepancies]
    for device in (first, second):
        counts = clean.devices[device]
        assert (counts.receipted, counts.kafka_pending, counts.bronze, counts.transform_pending,
                counts.silver, counts.quarantined, counts.rejected, counts.gold) == (
            120, 0, 120, 0, 120, {}, {}, 120)  # fmt: skip
    code, document = pipeline.cli("--tenant", pipeline.tenant)
    assert code == 0 and document["accounted"] is True
    assert document["totals"]["gold"] == 240

    # A lakehouse of the older layout, before its next run, keeps the progress in silver:
    # reconcile reads it there (the next transform moves it to internal).
    lake = iceberg_catalog(pipeline.settings, pipeline.credentials, s3_key="ingest")
    lake.rename_table(
        f"{pipeline.prefix}internal.bronze_progress", f"{pipeline.prefix}silver.bronze_progress"
    )
    older = pipeline.reconcile()
    assert older.accounted, [d.describe() for d in older.discrepancies]
    assert older.devices[first].transform_pending == 0

    # A duplicate: the first device's next batch produced to Kafka again, outside the gateway.
    receipt = pipeline.post(first, 3)
    envelope = _read_envelope(pipeline, receipt)
    producer = Producer(
        kafka_config(pipeline.settings, "gateway", credentials=pipeline.credentials)
    )
    producer.produce(pipeline.topic, envelope, partition=receipt["partition"])
    assert producer.flush(30) == 0
    # A loss: the second device's batch 3 is consumed, then its rows leave bronze.
    pipeline.post(second, 3)
    pipeline.wait_for_bronze(first, 5 * PER_BATCH)
    pipeline.wait_for_bronze(second, 4 * PER_BATCH)
    stop_consumer(pipeline.consumer)
    bronze = iceberg_catalog(pipeline.settings, pipeline.credentials, s3_key="ingest").load_table(
        f"{pipeline.prefix}bronze.readings"
    )
    bronze.delete(f"device_id = '{second}' and seq > {3 * PER_BATCH}")
    pipeline.transform()
    assert lake.table_exists(f"{pipeline.prefix}internal.bronze_progress")
    assert not lake.table_exists(f"{pipeline.prefix}silver.bronze_progress")

    found = pipeline.reconcile()
    assert not found.accounted
    described = {(d.kind, d.device_id): d for d in found.discrepancies}
    assert set(described) == {("envelope_duplicated", first), ("lost_before_bronze", second)}
    duplicated = described[("envelope_duplicated", first)]
    assert (duplicated.readings, duplicated.seqs) == (PER_BATCH, ((121, 160),))
    lost = described[("lost_before_bronze", second)]
    assert (lost.readings, lost.seqs) == (PER_BATCH, ((121, 160),))
    # Silver removed the duplicate copies; the lost readings never reached it.
    assert found.devices[first].quarantined == {"duplicate": PER_BATCH}
    assert (found.devices[first].silver, found.devices[first].gold) == (160, 160)
    assert (found.devices[second].receipted, found.devices[second].bronze) == (160, 120)

    code, document = pipeline.cli("--device", second)
    assert code == 1
    assert [(d["kind"], d["seq_ranges"]) for d in document["discrepancies"]] == [
        ("lost_before_bronze", [[121, 160]])
    ]


def test_reconcile_reads_one_state_of_main_while_main_moves(pipeline):
    """Between pinning and counting, new readings are consumed and a transform publishes:
    the counts are those of the pinned state, and the run's branch and catalog go."""
    first, second = sorted(pipeline.tokens)
    pipeline.post(first, 0)
    pipeline.post(second, 0)
    pipeline.wait_for_bronze(first, PER_BATCH)
    pipeline.wait_for_bronze(second, PER_BATCH)
    pipeline.transform()

    def move_main(step: str) -> None:
        if step == "counting every stage":
            pipeline.post(first, 1)
            pipeline.wait_for_bronze(first, 2 * PER_BATCH)
            pipeline.transform()

    pinned = Reconciler(pipeline.settings, pipeline.credentials).run(Window(), move_main)
    assert pinned.accounted, [d.describe() for d in pinned.discrepancies]
    counts = pinned.devices[first]
    assert (counts.receipted, counts.kafka_pending, counts.bronze, counts.silver,
            counts.gold) == (2 * PER_BATCH, PER_BATCH, PER_BATCH, PER_BATCH, PER_BATCH)  # fmt: skip
    with NessieClient(pipeline.settings, pipeline.credentials) as nessie:
        assert not [r.name for r in nessie.references() if r.name.startswith("reconcile_")]
    cursor = trino_connection(pipeline.settings).cursor()
    cursor.execute("show catalogs like 'reconcile%'")
    assert cursor.fetchall() == []

    moved = pipeline.reconcile()
    assert moved.accounted
    assert (moved.devices[first].bronze, moved.devices[first].silver) == (2 * PER_BATCH,) * 2


def test_offsets_that_expired_before_they_were_consumed_are_reported(pipeline, tmp_path):
    """The consumer is down while Kafka's retention deletes a batch it never read: the
    consumer logs it and records the gap in bronze, and reconcile reports both the gap
    and the receipted batch in it, instead of carrying on as if nothing was missing."""
    device = sorted(pipeline.tokens)[0]
    pipeline.post(device, 0)
    pipeline.wait_for_bronze(device, PER_BATCH)
    assert pipeline.consumer is not None
    assert stop_consumer(pipeline.consumer) == 0
    expired, kept = pipeline.post(device, 1), pipeline.post(device, 2)
    assert expired["partition"] == kept["partition"]
    admin = AdminClient(kafka_config(pipeline.settings, "admin"))
    where = TopicPartition(pipeline.topic, kept["partition"], kept["offset"])
    for future in admin.delete_records([where]).values():
        future.result(30)  # as retention would: everything before `kept` is gone
    pipeline.post(device, 3)
    pipeline.start_consumer(tmp_path / "consumer-2.log")
    pipeline.wait_for_bronze(device, 3 * PER_BATCH)
    logged = " ".join((tmp_path / "consumer-2.log").read_text().split())  # lines are wrapped
    assert "expired from Kafka before they were consumed" in logged

    found = pipeline.reconcile()
    described = {d.kind: d for d in found.discrepancies}
    assert set(described) == {"expired_in_kafka", "lost_before_bronze"}
    gap = described["expired_in_kafka"]
    assert gap.readings == kept["offset"] - expired["offset"] == 1
    assert f"offsets {expired['offset']}-{expired['offset']}" in gap.detail
    lost = described["lost_before_bronze"]
    assert (lost.device_id, lost.readings) == (device, PER_BATCH)
    assert "no longer in Kafka" in lost.detail
    assert found.devices[device].receipted == 4 * PER_BATCH
    assert found.devices[device].bronze == 3 * PER_BATCH
    code, document = pipeline.cli()
    assert code == 1 and not document["accounted"]


def _read_envelope(pipeline: Pipeline, receipt: dict[str, Any]) -> bytes:
    consumer = Consumer(kafka_config(pipeline.settings, "admin", **{"group.id": "rc-check"}))
    try:
        consumer.assign([TopicPartition(receipt["topic"], receipt["partition"], receipt["offset"])])
        message = consumer.consume(1, timeout=10)[0]
        return bytes(message.value())
    finally:
        consumer.close()
