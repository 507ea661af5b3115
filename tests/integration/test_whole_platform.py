"""The whole platform at once, as `make up` runs it, while a user acts on it.

A platform of this module's own (home and ports apart from the other tests' stack)
runs the supervisor's full set: gateway, consumer, the transform loop with its serving
publish, maintenance with compaction and garbage collection, audit, Superset and the
demo fleet. Meanwhile the test sends a device's batches through the gateway, loads a
backfill of more than 100 days, kills Trino, takes a backup and runs
`lakehouse reconcile` every few seconds. Every reconcile succeeds, the loop publishes
everything, and every reading is counted exactly once at every stage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from lakehouse import transform_runs as runs
from lakehouse.clients import postgres_connection
from lakehouse.config import Settings, isolated_environment
from lakehouse.credentials import load
from tests.integration.conftest import PER_BATCH, Device

pytestmark = pytest.mark.integration

HOME = Path(__file__).resolve().parents[2] / ".lakehouse-test-platform"
# Above the other tests' block (TEST_FIRST_PORT … + 20).
FIRST_PORT = int(os.environ.get("TEST_FIRST_PORT", "21000")) + 500
LOOPS = {
    "LAKEHOUSE_DEMO": "true",
    "LAKEHOUSE_SUPERVISOR_TRANSFORM_EVERY": "10",
    "LAKEHOUSE_SUPERVISOR_MAINTAIN_EVERY": "30",
    # Garbage collection on every other pass, deleting what is unreferenced after 2 min.
    "LAKEHOUSE_MAINTAIN_GC_EVERY_SECONDS": "60",
    "LAKEHOUSE_MAINTAIN_GC_GRACE_SECONDS": "120",
}
BACKFILL_DAYS = 101
BACKFILL_BATCH = 404  # readings per upload: one every hour, 6 uploads in all


@dataclass
class Platform:
    env: dict[str, str]
    settings: Settings

    def lakehouse(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lakehouse", *args], capture_output=True, text=True,
            timeout=timeout, check=False, env=self.env,
        )  # fmt: skip

    def status(self) -> dict[str, dict[str, Any]]:
        """Every service's row of `stack status` (which exits 1 while one is unhealthy)."""
        result = self.lakehouse("stack", "status", "--json", timeout=60)
        assert result.returncode in (0, 1), result.stderr[-2000:]
        return {row["name"]: row for row in json.loads(result.stdout)}

    def reconcile(self, *args: str) -> tuple[int, dict[str, Any] | None, str]:
        result = self.lakehouse("reconcile", "--json", *args)
        report = json.loads(result.stdout) if result.stdout.strip() else None
        said = result.stderr if len(result.stderr) < 4000 else (
            f"{result.stderr[:2500]} … {result.stderr[-1500:]}"
        )  # fmt: skip
        return result.returncode, report, said


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    env = {**os.environ, **isolated_environment(HOME, FIRST_PORT), **LOOPS}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        settings = Settings()
    platform = Platform(env, settings)
    platform.lakehouse("stack", "down", "--purge", timeout=300)  # what an aborted run left
    up = platform.lakehouse("stack", "up", timeout=1200)
    try:
        assert up.returncode == 0, (up.stdout + up.stderr)[-4000:]
        yield platform
    finally:
        platform.lakehouse("stack", "down", "--purge", timeout=300)


@dataclass
class ReconcileCalls:
    """`lakehouse reconcile` over the whole lake every few seconds, in a thread."""

    platform: Platform
    results: list[tuple[int, float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            code, _, stderr = self.platform.reconcile()
            self.results.append((code, time.monotonic() - started, stderr))
            self.stop.wait(3)


def register(platform: Platform, device: str, since: datetime) -> str:
    result = platform.lakehouse(
        "devices", "register", device, "--tenant", "tenant-whole", "--site", "site-whole",
        "--lat", "48.1", "--lon", "11.6", "--since", since.strftime("%Y-%m-%dT%H:%M:%S"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def backfill(url: str, token: str, start: datetime) -> int:
    """BACKFILL_DAYS of hourly readings from `start`, uploaded like an agent catching up."""
    total = BACKFILL_DAYS * 24
    with httpx.Client(timeout=60) as client:
        for first in range(0, total, BACKFILL_BATCH):
            readings = [
                {"seq": n + 1, "ts": (start + timedelta(hours=n)).isoformat(),
                 "metric": "humidity", "value": 40.0 + n % 24}
                for n in range(first, min(first + BACKFILL_BATCH, total))
            ]  # fmt: skip
            headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": f"fill-{first}"}
            deadline = time.monotonic() + 300
            while True:
                try:
                    response = client.post(url, json=readings, headers=headers)
                    if response.status_code in (200, 202):
                        break
                    assert response.status_code in (429, 503), response.text
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"backfill upload {first} not accepted"
                time.sleep(1)
    return total


def kill_and_wait(platform: Platform, victim: str, timeout: float = 300) -> None:
    before = platform.status()[victim]
    os.kill(before["pid"], signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while True:
        row = platform.status()[victim]
        if row["healthy"] and row["pid"] not in (None, before["pid"]):
            return
        assert time.monotonic() < deadline, f"{victim} not back: {row}"
        time.sleep(2)


def counted(platform: Platform, device: str, expected: int, timeout: float = 600) -> dict:
    """The device's counts once the loop has carried all `expected` readings to gold."""
    deadline = time.monotonic() + timeout
    while True:
        code, report, stderr = platform.reconcile("--device", device)
        assert code == 0, stderr
        assert report is not None
        (counts,) = report["devices"]
        if counts["gold"] >= expected or time.monotonic() >= deadline:
            return counts
        time.sleep(5)


def test_the_whole_platform_keeps_every_reading_while_everything_runs(platform, tmp_path):
    settings = platform.settings
    gateway = f"http://127.0.0.1:{settings.gateway.port}/v1/readings"
    services = platform.status()
    for name in ("gateway", "consumer-1", "transform", "maintain", "demo", "audit", "trino"):
        assert services[name]["state"] == "running", services[name]

    reconciles = ReconcileCalls(platform)
    caller = threading.Thread(target=reconciles.run, daemon=True)
    caller.start()
    unique = uuid.uuid4().hex[:6]
    live_id, backfill_id = f"whole-live-{unique}", f"whole-fill-{unique}"
    now = datetime.now(UTC)
    live = Device(gateway, register(platform, live_id, now - timedelta(days=1)))
    fill_start = (now - timedelta(days=BACKFILL_DAYS + 2)).replace(minute=0, second=0)
    fill_token = register(platform, backfill_id, fill_start - timedelta(days=1))
    live.thread.start()
    try:
        filled = backfill(gateway, fill_token, fill_start)
        kill_and_wait(platform, "trino")
        backup = platform.lakehouse("backup", "--to", str(tmp_path / "backup"))
        assert backup.returncode == 0, backup.stderr[-3000:]
        time.sleep(20)  # a few more transform runs and reconciles with the device sending
    finally:
        live.finish.set()
        live.thread.join(330)
    assert live.error is None, live.error
    sent = live.sent * PER_BATCH

    for device, expected in ((live_id, sent), (backfill_id, filled)):
        counts = counted(platform, device, expected)
        stages = {k: counts[k] for k in ("receipted", "kafka_pending", "bronze",
                                         "transform_pending", "silver", "gold")}  # fmt: skip
        assert stages == {
            "receipted": expected,
            "kafka_pending": 0,
            "bronze": expected,
            "transform_pending": 0,
            "silver": expected,
            "gold": expected,
        }, device
        assert (counts["rejected"], counts["quarantined"]) == ({}, {}), device

    reconciles.stop.set()
    caller.join(900)
    failed = [f"exit {code}: {stderr}" for code, _, stderr in reconciles.results if code != 0]
    assert not failed, "\n\n".join(failed[:3])
    assert len(reconciles.results) >= 5, reconciles.results
    code, report, stderr = platform.reconcile()
    assert code == 0 and report is not None and report["accounted"], stderr

    with postgres_connection(settings, load(settings)) as conn:
        records = runs.recent(conn, limit=1000)
    # A run Trino's death cut short is `interrupted` (nothing kept); none failed. (The
    # newest may still be running.)
    unwell = [
        f"{r.run_id} {r.outcome}: {r.error}" for r in records[1:]
        if r.outcome not in ("published", "up_to_date", "interrupted")
    ]  # fmt: skip
    log = (settings.home / "logs" / "transform.log").read_text(errors="replace")
    assert not unwell, "\n".join(unwell) + "\n\ntransform.log:\n" + log[-6000:]
    assert "published" in {r.outcome for r in records}
    assert all(row["state"] == "running" for row in platform.status().values()), platform.status()
