"""Fault drill: every server, the consumer and the gateway are kill -9'd mid-stream.

The supervisor brings each back with no manual step; the device keeps retrying its
batches like the edge agent does (same Idempotency-Key until accepted), and bronze ends
up with exactly the readings sent, each once; so does silver after the next transform.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from lakehouse import registry
from lakehouse.clients import postgres_connection, trino_connection
from tests.integration.conftest import (
    PER_BATCH,
    Device,
    assert_accounted,
    device_counts,
    wait_for_device,
)

pytestmark = pytest.mark.integration

VICTIMS = ("minio", "nessie", "kafka", "postgres", "trino", "consumer-1", "gateway")


def status_rows() -> dict[str, dict]:
    result = subprocess.run(
        [sys.executable, "-m", "lakehouse", "stack", "status", "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return {row["name"]: row for row in json.loads(result.stdout)}


def wait_restarted(name: str, old_pid: int, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        row = status_rows()[name]
        if row["healthy"] and row["pid"] not in (None, old_pid):
            return row
        assert time.monotonic() < deadline, f"{name} not back: {row}"
        time.sleep(1)


def test_every_server_and_service_killed_mid_stream_loses_and_duplicates_nothing(
    stack, stack_settings, credentials
):
    device_id = f"drill-{uuid.uuid4().hex[:8]}"
    with postgres_connection(stack_settings, credentials) as conn:
        conn.autocommit = True
        registry.ensure_schema(conn)
        token = registry.register(
            conn, device_id, tenant="tenant-drill", site="site-drill", lat=48.1, lon=11.6,
            since=datetime.now(UTC) - timedelta(days=1),
        )  # fmt: skip
    device = Device(f"http://127.0.0.1:{stack_settings.gateway.port}/v1/readings", token)
    device.thread.start()
    try:
        for victim in VICTIMS:
            before = device.sent
            deadline = time.monotonic() + 120
            while device.sent < before + 3 and device.error is None:
                assert time.monotonic() < deadline, f"no progress before killing {victim}"
                time.sleep(0.2)
            assert device.error is None, device.error
            row = status_rows()[victim]
            os.kill(row["pid"], signal.SIGKILL)
            after = wait_restarted(victim, row["pid"])
            assert after["restarts"] == row["restarts"] + 1
            assert after["last_exit"] == "killed by SIGKILL"
    finally:
        device.finish.set()
        device.thread.join(330)
    assert device.error is None, device.error
    expected = device.sent * PER_BATCH
    assert wait_for_device(stack_settings, device_id, expected)[0] == expected
    time.sleep(6)  # one more commit interval: nothing arrives late as a duplicate
    assert device_counts(stack_settings, device_id) == (expected, expected)
    # Services that depend on a killed server (Superset on PostgreSQL) may still be
    # settling; every one must be running and healthy again without a hand.
    deadline = time.monotonic() + 180
    while not all(r["state"] == "running" and r["healthy"] for r in status_rows().values()):
        assert time.monotonic() < deadline, status_rows()
        time.sleep(2)

    # The next transform publishes every reading to silver, each once.
    transform = subprocess.run(
        [sys.executable, "-m", "lakehouse", "transform", "--quiet"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert transform.returncode == 0, transform.stderr[-3000:]
    cursor = trino_connection(stack_settings).cursor()
    cursor.execute(
        "select count(*), count(distinct seq), min(seq), max(seq) from lake.silver.readings "
        f"where device_id = '{device_id}'"
    )
    assert cursor.fetchall() == [[expected, expected, 1, expected]]
    # And reconcile accounts for each one at every stage; killing Kafka recorded no gap.
    counts = assert_accounted(stack_settings, credentials, device_id)
    assert (counts.receipted, counts.bronze, counts.silver, counts.gold) == (expected,) * 4
