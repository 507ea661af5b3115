"""`lakehouse simulate` registers its fleet and stamps readings with the current time."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from lakehouse import registry
from lakehouse.clients import kafka_config, postgres_connection

pytestmark = pytest.mark.integration


def simulate(topic: str, *extra: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "lakehouse", "simulate", "--devices", "3", "--tenants", "1",
         "--sites", "2", "--samples", "3", "--interval", "5", "--topic", topic, *extra],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    # The console wraps long lines; compare words, not line breaks.
    result.stderr = " ".join(result.stderr.split())
    return result


def readings_in(settings, topic: str) -> list[dict]:
    consumer = Consumer(kafka_config(settings, "admin", **{"group.id": f"check-{topic}"}))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(2)])
    readings: list[dict] = []
    deadline = time.monotonic() + 30
    while len(readings) < 36 and time.monotonic() < deadline:
        for message in consumer.consume(100, timeout=1):
            if message.error() is None:
                readings.extend(orjson.loads(message.value())["readings"])
    consumer.close()
    return readings


def test_simulate_registers_its_devices_and_stamps_readings_now(
    stack, stack_settings, credentials, topic_factory
):
    topic = topic_factory(partitions=2)
    started = datetime.now(UTC)
    first = simulate(topic)
    assert first.returncode == 0, first.stderr
    assert "registered " in first.stderr and " of 3 devices (" in first.stderr
    with postgres_connection(stack_settings, credentials) as conn:
        devices = ["dev-00001", "dev-00002", "dev-00003"]
        assert registry.registered(conn, devices) == set(devices)
    readings = readings_in(stack_settings, topic)
    assert len(readings) == 3 * 3 * 4
    stamps = sorted(datetime.fromisoformat(r["ts"]) for r in readings)
    assert stamps[-1] <= datetime.now(UTC)
    assert stamps[-1] >= started - timedelta(seconds=2)
    assert stamps[0] >= started - timedelta(seconds=2 * 5 + 2)

    again = simulate(topic)
    assert again.returncode == 0, again.stderr
    assert "registered 0 of 3 devices (3 were registered already)" in again.stderr


def test_simulate_without_registering_says_so(stack, topic_factory):
    result = simulate(topic_factory(partitions=2), "--no-register", "--start", "2026-11-01")
    assert result.returncode == 0, result.stderr
    assert "devices not registered (--no-register)" in result.stderr
    assert "event time 2026-11-01 00:00:00 to 00:00:10 UTC" in result.stderr
