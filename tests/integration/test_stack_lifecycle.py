"""The stack survives restarts, notices a killed service and restarts only that one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pytest

from lakehouse.clients import iceberg_catalog, trino_connection

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


def test_status_json_lists_every_service_healthy(stack):
    result = cli("stack", "status", "--json")
    statuses = json.loads(result.stdout)
    assert [s["name"] for s in statuses] == ["postgres", "minio", "nessie", "kafka", "trino"]
    assert all(s["healthy"] for s in statuses)
    assert all(isinstance(s["pid"], int) for s in statuses)


def test_up_twice_is_harmless(stack):
    before = pids()
    result = cli("stack", "up")
    assert pids() == before
    assert result.stderr.count("already running") == 5


def test_kill_9_is_reported_and_up_restarts_only_that_service(stack):
    before = pids()
    victim = "kafka"
    os.kill(before[victim], signal.SIGKILL)
    wait_gone(before[victim])

    status = cli("stack", "status", "--json", check=False)
    assert status.returncode == 1, status.stdout
    rows = {s["name"]: s for s in json.loads(status.stdout)}
    assert rows[victim]["healthy"] is False
    assert rows[victim]["pid"] is None
    assert all(rows[name]["healthy"] for name in rows if name != victim)

    result = cli("stack", "up")
    after = pids()
    assert after[victim] is not None and after[victim] != before[victim]
    assert {k: v for k, v in after.items() if k != victim} == {
        k: v for k, v in before.items() if k != victim
    }
    assert f"{victim}" in result.stderr and "started" in result.stderr


def test_tables_and_rows_survive_down_and_up(stack, stack_settings, credentials, unique):
    name = f"bronze.durable_{unique}"
    catalog = iceberg_catalog(stack_settings, credentials)
    rows = pa.table(
        {"id": pa.array(range(500), pa.int64()), "label": [f"r{i}" for i in range(500)]}
    )
    catalog.create_table(name, schema=rows.schema).append(rows)

    cli("stack", "down")
    assert all(pid is None for pid in pids().values())
    assert not list((Path(stack_settings.home) / "run").glob("*.pid"))
    started = time.monotonic()
    cli("stack", "up")
    assert time.monotonic() - started < 600

    try:
        catalog = iceberg_catalog(stack_settings, credentials)
        namespaces = {ns[0] for ns in catalog.list_namespaces()}
        assert {"bronze", "silver", "gold", "platinum"} <= namespaces
        read = catalog.load_table(name).scan().to_arrow().sort_by("id")
        assert read.to_pylist() == rows.to_pylist()
        cursor = trino_connection(stack_settings).cursor()
        cursor.execute(f"select count(*), sum(id), max(label) from lake.{name}")
        assert cursor.fetchall() == [[500, sum(range(500)), "r99"]]
    finally:
        iceberg_catalog(stack_settings, credentials).drop_table(name)


def test_logs_prints_the_end_of_a_service_log(stack):
    result = cli("stack", "logs", "trino", "--lines", "5")
    assert len(result.stdout.splitlines()) == 5
    unknown = cli("stack", "logs", "nosuch", check=False)
    assert unknown.returncode == 1
    assert "unknown service 'nosuch'" in unknown.stderr
    assert "postgres, minio, nessie, kafka, trino" in unknown.stderr
