"""Device to bronze through network cuts, power loss and refusals: every reading
exactly once, or parked on the device with the gateway's reason.

Checked in bronze: the rows of the device are counted raw and deduplicated on
(device_id, seq); both must equal the readings sampled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lakehouse_edge.queue import DurableQueue
from lakehouse_testing.gateway_process import start_gateway
from lakehouse_testing.lake import device_counts, free_port

from lakehouse import registry
from lakehouse.clients import postgres_connection, trino_connection
from tests.integration.conftest import (
    assert_accounted,
    start_consumer,
    stop_consumer,
    wait_for_device,
)

pytestmark = pytest.mark.integration

READINGS = 20_000


def agent(config: Path, command: str = "run", log=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lakehouse_edge", command, "--config", str(config)],
        stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip


def queue_status(config: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "lakehouse_edge", "status", "--config", str(config)],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    return json.loads(out)


def kill_9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def device_config(
    settings, credentials, tmp_path: Path, port: int, extra: str = ""
) -> tuple[str, Path]:
    """A registered device and its agent configuration: (device id, config path)."""
    device = f"edge-{os.urandom(4).hex()}"
    with postgres_connection(settings, credentials) as conn:
        conn.autocommit = True
        registry.ensure_schema(conn)
        token = registry.register(conn, device, tenant="tenant-01", site="site-edge",
                                  lat=51.5, lon=-0.1)  # fmt: skip
    token_file = tmp_path / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    config = tmp_path / "config.toml"
    config.write_text(
        f'gateway = "http://127.0.0.1:{port}"\ntoken_file = "{token_file}"\n'
        f'state_dir = "{tmp_path / "state"}"\ninterval_seconds = 0.05\nbatch_size = 500\n'
        f"{extra}"
    )
    return device, config


def test_network_cut_and_power_loss_lose_and_duplicate_nothing(
    stack, stack_settings, credentials, tmp_path, consumer_log
):
    port = free_port()
    device, config = device_config(
        stack_settings, credentials, tmp_path, port,
        f'max_readings = {READINGS}\n\n[[sources]]\ntype = "simulator"\nmetrics = 50\n',
    )  # fmt: skip
    gateway_log = tmp_path / "gateway.log"
    agent_log = (tmp_path / "agent.log").open("ab")
    topic = stack_settings.kafka.topic
    consumer = start_consumer(topic, stack_settings.ingest.group_id, "--max-age", "2",
                              log=consumer_log)  # fmt: skip
    gateway = start_gateway(port, gateway_log)
    running = None
    try:
        running = agent(config, log=agent_log)
        time.sleep(3)
        kill_9(running)  # power loss while uploading
        running = agent(config, log=agent_log)
        time.sleep(2)
        gateway.terminate()  # the network goes away for 30 s
        gateway.wait(30)
        time.sleep(10)
        kill_9(running)  # power loss while the gateway is unreachable
        running = agent(config, log=agent_log)
        time.sleep(20)
        gateway = start_gateway(port, gateway_log)
        time.sleep(2)
        kill_9(running)  # power loss while the backlog drains
        running = agent(config, log=agent_log)

        deadline = time.monotonic() + 240
        while True:
            status = queue_status(config)
            if status["next_seq"] > READINGS and status["ready"] == status["inflight"] == 0:
                break
            assert time.monotonic() < deadline, status
            time.sleep(1)
        assert (status["failed"], status["dropped"]) == (0, 0)
        running.terminate()
        assert running.wait(60) == 0

        cursor = trino_connection(stack_settings).cursor()
        query = (
            "select count(*), count(distinct seq), min(seq), max(seq) "
            f"from lake.bronze.readings where device_id = '{device}'"
        )
        deadline = time.monotonic() + 180
        while True:
            cursor.execute(query)
            rows = cursor.fetchall()[0]
            if rows[1] >= READINGS or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert rows == [READINGS, READINGS, 1, READINGS]
        counts = assert_accounted(stack_settings, credentials, device)
        assert (counts.receipted, counts.bronze) == (READINGS, READINGS)
    finally:
        if running is not None and running.poll() is None:
            running.kill()  # the test failed with the agent still running
            running.wait(30)
        agent_log.close()
        gateway.terminate()
        gateway.wait(30)
        assert stop_consumer(consumer) == 0


def test_a_refused_reading_is_parked_with_its_reason_and_a_large_batch_is_split(
    stack, stack_settings, credentials, tmp_path, consumer_log
):
    """A batch holding two readings the gateway refuses (as an older agent would have
    queued them) and too large for one Kafka message: the two are parked as failed
    with the gateway's reasons, the other 410 reach bronze once each."""
    port = free_port()
    device, config = device_config(stack_settings, credentials, tmp_path, port)
    now = datetime.now(UTC)
    stamp = now.isoformat().replace("+00:00", "Z")
    padding = {f"k{i}": "x" * 90 for i in range(32)}  # ~3 KB: 410 of them make > 1 MiB
    readings = [{"metric": "t", "value": float(i), "ts": stamp, "attrs": padding}
                for i in range(410)]  # fmt: skip
    readings.insert(5, {"metric": "t", "value": "7", "ts": stamp})
    ahead = (now + timedelta(days=2)).isoformat()
    readings.insert(300, {"metric": "t", "value": 1.0, "ts": ahead})
    (tmp_path / "state").mkdir()
    queue = DurableQueue(str(tmp_path / "state" / "queue.db"))
    queue.put_many(readings)
    queue.close()
    with _uplink(stack_settings, port, tmp_path, consumer_log):
        flushed = subprocess.run(
            [sys.executable, "-m", "lakehouse_edge", "flush", "--config", str(config)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert flushed.returncode == 1, flushed.stderr  # something failed for good
        assert "batch of 410 readings too large (batch-too-large)" in flushed.stderr
        status = queue_status(config)
        assert (status["acked"], status["failed"], status["ready"]) == (410, 2, 0)
        assert status["failed_by_reason"] == {"ts_in_future": 1, "wrong_type": 1}
        assert wait_for_device(stack_settings, device, 410) == (410, 410)
        # Requeued, they are refused again for the same reasons and nothing is doubled.
        requeued = subprocess.run(
            [sys.executable, "-m", "lakehouse_edge", "requeue", "--config", str(config)],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        assert json.loads(requeued.stdout) == {"requeued": 2}
        flushed = subprocess.run(
            [sys.executable, "-m", "lakehouse_edge", "flush", "--config", str(config)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert flushed.returncode == 1
        assert queue_status(config)["failed_by_reason"] == {"ts_in_future": 1, "wrong_type": 1}
        assert device_counts(stack_settings, device) == (410, 410)
        counts = assert_accounted(stack_settings, credentials, device)
        assert (counts.receipted, counts.bronze) == (410, 410)


def test_a_reflashed_device_numbers_on_from_the_gateway_and_loses_nothing(
    stack, stack_settings, credentials, tmp_path, consumer_log
):
    """A device sends 50 readings, its SD card is re-flashed (a fresh queue numbering
    from 1 again), and it sends 30 more: all 80 reach bronze under distinct seqs, and
    reconcile accounts for each of them."""
    port = free_port()
    device, config = device_config(stack_settings, credentials, tmp_path, port)
    reflashed = tmp_path / "reflashed.toml"
    reflashed.write_text(
        config.read_text().replace(str(tmp_path / "state"), str(tmp_path / "state-2"))
    )
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    with _uplink(stack_settings, port, tmp_path, consumer_log):
        for install, (path, count) in enumerate(((config, 50), (reflashed, 30))):
            state = tmp_path / ("state" if install == 0 else "state-2")
            state.mkdir()
            queue = DurableQueue(str(state / "queue.db"))
            seqs = queue.put_many(
                [{"metric": "t", "value": float(i), "ts": stamp} for i in range(count)]
            )
            assert seqs[0] == 1  # each install numbers from 1 while it is offline
            queue.close()
            flushed = subprocess.run(
                [sys.executable, "-m", "lakehouse_edge", "flush", "--config", str(path)],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert flushed.returncode == 0, flushed.stderr
        assert "renumbered to follow them" in flushed.stderr
        status = queue_status(reflashed)
        assert (status["acked"], status["next_seq"], status["anchored"]) == (30, 81, True)
        assert wait_for_device(stack_settings, device, 80) == (80, 80)
        assert _bronze_span(stack_settings, device, "seq") == [1, 80]
        counts = assert_accounted(stack_settings, credentials, device)
        assert (counts.receipted, counts.bronze) == (80, 80)


def test_a_file_source_restarted_after_power_loss_reads_on_without_rereading(
    stack, stack_settings, credentials, tmp_path, consumer_log
):
    """An agent tails a JSONL file, loses power, the file grows meanwhile: after the
    restart it sends the new lines only, so bronze holds every line once."""
    port = free_port()
    data = tmp_path / "sensor.jsonl"

    def append(first: int, count: int) -> None:
        with data.open("a") as out:
            for i in range(first, first + count):
                out.write(json.dumps({"metric": "t", "value": float(i)}) + "\n")

    append(0, 30)
    device, config = device_config(
        stack_settings, credentials, tmp_path, port,
        f'\n[[sources]]\ntype = "file"\npath = "{data}"\n',
    )  # fmt: skip
    log_path = tmp_path / "agent.log"
    with (
        _uplink(stack_settings, port, tmp_path, consumer_log),
        log_path.open("ab") as agent_log,
    ):
        running = agent(config, log=agent_log)
        try:
            _wait_until_sent(config, 30, log_path)
            kill_9(running)  # power loss
            append(30, 20)
            running = agent(config, log=agent_log)
            _wait_until_sent(config, 50, log_path)
        finally:
            running.terminate()
            stopped = running.wait(60)
        assert stopped == 0
        assert wait_for_device(stack_settings, device, 50) == (50, 50)
        assert _bronze_span(stack_settings, device, "value") == [0.0, 49.0]
        counts = assert_accounted(stack_settings, credentials, device)
        assert (counts.receipted, counts.bronze) == (50, 50)


def _bronze_span(stack_settings, device: str, column: str) -> list[Any]:
    """The smallest and largest `column` of the device's rows in bronze."""
    cursor = trino_connection(stack_settings).cursor()
    cursor.execute(
        f"select min({column}), max({column}) from lake.bronze.readings "
        f"where device_id = '{device}'"
    )
    return list(cursor.fetchall()[0])


@contextmanager
def _uplink(stack_settings, port: int, tmp_path: Path, consumer_log) -> Iterator[None]:
    """A gateway on `port` and a consumer of the stack's topic, for the block's length."""
    consumer = start_consumer(stack_settings.kafka.topic, stack_settings.ingest.group_id,
                              "--max-age", "2", log=consumer_log)  # fmt: skip
    gateway = start_gateway(port, tmp_path / "gateway.log")
    try:
        yield
    finally:
        gateway.terminate()
        gateway.wait(30)
        assert stop_consumer(consumer) == 0


def _wait_until_sent(config: Path, readings: int, agent_log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = queue_status(config)
        if status["next_seq"] > readings and status["ready"] == status["inflight"] == 0:
            assert status["next_seq"] == readings + 1, status  # nothing read twice
            return
        # The agent's own words say why it queued or sent nothing.
        assert time.monotonic() < deadline, (status, agent_log.read_text()[-4000:])
        time.sleep(0.5)
