"""The stack survives restarts, notices a killed service and restarts only that one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psutil
import pyarrow as pa
import pytest
from confluent_kafka import Producer
from lakehouse_testing.lake import readings_envelope

from lakehouse.clients import iceberg_catalog, kafka_config, trino_connection
from lakehouse.stack.manager import Stack
from tests.integration.conftest import wait_for_device

pytestmark = pytest.mark.integration

LAKEHOUSE = [sys.executable, "-m", "lakehouse"]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*LAKEHOUSE, *args], capture_output=True, text=True, timeout=600, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"lakehouse {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result


def pids() -> dict[str, int | None]:
    statuses = json.loads(cli("stack", "status", "--json", check=False).stdout)
    return {s["name"]: s["pid"] for s in statuses}


def wait_gone(pid: int, timeout: float = 30) -> None:
    """Wait until `pid` has exited (a zombie counts: it no longer runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.1)
    raise AssertionError(f"pid {pid} still running {timeout} s after SIGKILL")


def status_rows() -> dict[str, dict]:
    return {s["name"]: s for s in json.loads(cli("stack", "status", "--json", check=False).stdout)}


def test_status_json_lists_every_service_healthy(stack):
    result = cli("stack", "status", "--json")
    statuses = json.loads(result.stdout)
    assert [s["name"] for s in statuses] == [
        "postgres", "minio", "nessie", "kafka", "trino", "superset", "audit", "gateway",
        "consumer-1",
    ]  # fmt: skip
    assert all(s["healthy"] and s["state"] == "running" for s in statuses)
    assert all(isinstance(s["pid"], int) and s["uptime_seconds"] >= 0 for s in statuses)
    assert [s["kind"] for s in statuses] == ["server"] * 6 + ["service"] * 3


def test_up_twice_is_harmless(stack):
    before = pids()
    result = cli("stack", "up")
    assert pids() == before
    assert "supervisor already running" in result.stderr


def test_kill_9_is_restarted_by_the_supervisor_alone(stack):
    before = status_rows()
    victim = "kafka"
    os.kill(before[victim]["pid"], signal.SIGKILL)
    wait_gone(before[victim]["pid"])

    deadline = time.monotonic() + 120
    while True:
        rows = status_rows()
        row = rows[victim]
        if row["healthy"] and row["pid"] != before[victim]["pid"]:
            break
        assert time.monotonic() < deadline, row
        time.sleep(1)
    assert row["restarts"] == before[victim]["restarts"] + 1
    assert row["last_exit"] == "killed by SIGKILL"
    # Nothing else was restarted.
    assert {k: v["pid"] for k, v in rows.items() if k != victim} == {
        k: v["pid"] for k, v in before.items() if k != victim
    }


def test_every_process_runs_unprivileged_and_state_is_private(stack, stack_settings):
    expected_user = stack_settings.os_user if os.geteuid() == 0 else psutil.Process().username()
    rows = status_rows()
    for name, row in rows.items():
        process = psutil.Process(row["pid"])
        assert process.username() == expected_user, name
        for child in process.children(recursive=True):
            assert child.username() == expected_user, (name, child.name())
        # Only what the process needs from the environment: no variables of the tests.
        assert "PYTEST_CURRENT_TEST" not in process.environ(), name
    home = Path(stack_settings.home)
    assert home.stat().st_mode & 0o777 == 0o700
    assert (home / "credentials.json").stat().st_mode & 0o777 == 0o600


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def produce_envelopes(settings, device: str, *, envelopes: int, per_envelope: int) -> int:
    """Gateway-shaped envelopes straight into the readings topic; all acknowledged."""
    producer = Producer(kafka_config(settings, "simulate", acks="all"))
    now = datetime.now(UTC).isoformat()
    for number in range(envelopes):
        envelope = readings_envelope(device, number, per_envelope, tenant="tenant-01",
                                     site="site-01", ts=now, value=20.5)  # fmt: skip
        producer.produce(settings.kafka.topic, orjson.dumps(envelope), device.encode())
        producer.poll(0)
    assert producer.flush(30) == 0
    return envelopes * per_envelope


def test_tables_and_rows_survive_down_and_up(stack, stack_settings, credentials, unique):
    name = f"bronze.durable_{unique}"
    catalog = iceberg_catalog(stack_settings, credentials, s3_key="ingest")
    rows = pa.table(
        {"id": pa.array(range(500), pa.int64()), "label": [f"r{i}" for i in range(500)]}
    )
    catalog.create_table(name, schema=rows.schema).append(rows)
    # The supervised consumer is busy with these when the stack goes down.
    device = f"down-{unique}"
    sent = produce_envelopes(stack_settings, device, envelopes=400, per_envelope=50)
    before = {**pids(), "supervisor": Stack(stack_settings).supervisor_pid()}
    children = [
        child.pid for pid in before.values() if pid for child in psutil.Process(pid).children(True)
    ]

    cli("stack", "down")
    assert all(pid is None for pid in pids().values())
    assert not list((Path(stack_settings.home) / "run").glob("*.pid"))
    left = [pid for pid in [*before.values(), *children] if pid and alive(pid)]
    assert left == [], "processes left behind by stack down"
    started = time.monotonic()
    cli("stack", "up")
    assert time.monotonic() - started < 600
    # Whatever was consumed before the stop was committed; the rest is consumed now.
    assert wait_for_device(stack_settings, device, sent) == (sent, sent)

    try:
        catalog = iceberg_catalog(stack_settings, credentials, s3_key="ingest")
        namespaces = {ns[0] for ns in catalog.list_namespaces()}
        assert {"bronze", "silver", "gold", "platinum"} <= namespaces
        read = catalog.load_table(name).scan().to_arrow().sort_by("id")
        assert read.to_pylist() == rows.to_pylist()
        cursor = trino_connection(stack_settings).cursor()
        cursor.execute(f"select count(*), sum(id), max(label) from lake.{name}")
        assert cursor.fetchall() == [[500, sum(range(500)), "r99"]]
    finally:
        iceberg_catalog(stack_settings, credentials, s3_key="ingest").drop_table(name)


def test_logs_prints_the_end_of_a_service_log(stack):
    result = cli("stack", "logs", "trino", "--lines", "5")
    assert len(result.stdout.splitlines()) == 5
    unknown = cli("stack", "logs", "nosuch", check=False)
    assert unknown.returncode == 1
    assert "unknown service 'nosuch'" in unknown.stderr
    assert (
        "postgres, minio, nessie, kafka, trino, superset, audit, gateway, consumer-1, supervisor"
        in (" ".join(unknown.stderr.split()))
    )
