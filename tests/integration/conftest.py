from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from lakehouse_testing.lake import device_counts
from trino.exceptions import HttpError, TrinoConnectionError

from lakehouse import registry
from lakehouse.clients import kafka_config, postgres_connection, trino_connection
from lakehouse.stack.kafka_acl import grant_topic, revoke_topic


@pytest.fixture(scope="module")
def registry_conn(stack, stack_settings, credentials):
    """A PostgreSQL connection as the registry's owner, with the registry's schema."""
    conn = postgres_connection(stack_settings, credentials)
    conn.autocommit = True
    registry.ensure_schema(conn)
    yield conn
    conn.close()


def test_groups(topic: str) -> list[str]:
    """Group id prefixes the ingest principal may use on a test topic besides the stack's
    default group (granted at bootstrap): `g-<topic>…`."""
    return [f"g-{topic}"]


@pytest.fixture
def topic_factory(stack, stack_settings, unique) -> Iterator:
    """Creates topics with the same ACLs the stack's readings topic has."""
    admin = AdminClient(kafka_config(stack_settings, "admin"))
    created: list[str] = []

    def make(partitions: int = 6, name: str | None = None) -> str:
        topic = name or f"t-{unique}-{len(created)}"
        admin.create_topics([NewTopic(topic, num_partitions=partitions)])[topic].result(30)
        grant_topic(admin, topic, test_groups(topic))
        created.append(topic)
        return topic

    yield make
    if created:
        for future in admin.delete_topics(created).values():
            future.result(30)
        for topic in created:
            revoke_topic(admin, topic, test_groups(topic))


@pytest.fixture
def consumer_log(tmp_path):
    """Where subprocess consumers write their logs (kept in the test's tmp dir)."""
    with (tmp_path / "consumers.log").open("ab") as log:
        yield log


def consumer_command(topic: str, group: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "lakehouse", "ingest", "kafka",
        "--topic", topic, "--group", group,
        *([] if "--metrics-port" in extra else ["--metrics-port", "0"]), *extra,
    ]  # fmt: skip


def start_consumer(topic: str, group: str, *extra: str, failpoint: str | None = None,
                   log=None) -> subprocess.Popen:  # fmt: skip
    env = dict(os.environ)
    env.pop("LAKEHOUSE_FAILPOINT", None)
    if failpoint:
        env["LAKEHOUSE_FAILPOINT"] = failpoint
    return subprocess.Popen(
        consumer_command(topic, group, *extra), env=env,
        stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip


def stop_consumer(proc: subprocess.Popen, timeout: float = 60) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout)


def bronze_counts(settings, topic: str, table: str = "bronze.readings") -> tuple[int, int]:
    """(rows, distinct partition/offset pairs) in a readings table from one topic."""
    cursor = trino_connection(settings).cursor()
    cursor.execute(
        "select count(*), count(distinct (source_partition, source_offset)) "
        f"from lake.{table} where source_topic = '{topic}'"
    )
    rows, distinct = cursor.fetchall()[0]
    return rows, distinct


def _counts_when_answered(counts, deadline: float) -> tuple[int, int]:
    """`counts()`, retried while Trino is briefly unavailable (a supervised restart)."""
    while True:
        try:
            return counts()
        except (TrinoConnectionError, HttpError, OSError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(2)


def _poll(counts, expected: int, timeout: float) -> tuple[int, int]:
    """Call `counts` every 2 s until its first number reaches `expected` or time is up."""
    deadline = time.monotonic() + timeout
    current = _counts_when_answered(counts, deadline)
    while current[0] < expected and time.monotonic() < deadline:
        time.sleep(2)
        current = _counts_when_answered(counts, deadline)
    return current


def wait_for_device(
    settings, device: str, expected: int, timeout: float = 180, table: str = "bronze.readings"
) -> tuple[int, int]:
    """Poll until the device has `expected` rows in `table` (or the time is up)."""
    return _poll(lambda: device_counts(settings, device, table), expected, timeout)


def wait_for_rows(settings, topic: str, expected: int, timeout: float = 180) -> tuple[int, int]:
    """Poll until the topic has `expected` bronze rows (or the time is up)."""
    return _poll(lambda: bronze_counts(settings, topic), expected, timeout)


def assert_accounted(settings, credentials, device: str, timeout: float = 120) -> Any:
    """`lakehouse reconcile` for one device, once nothing of it waits in Kafka: every
    reading accounted for exactly once. Returns the device's counts."""
    from lakehouse.reconcile.collect import Reconciler
    from lakehouse.reconcile.model import Window

    deadline = time.monotonic() + timeout
    while True:
        report = Reconciler(settings, credentials).run(Window(device=device))
        counts = report.devices.get(device)
        if counts is not None and counts.kafka_pending == 0:
            break
        assert time.monotonic() < deadline, f"{device} still waits in Kafka"
        time.sleep(2)
    assert report.accounted, [d.describe() for d in report.discrepancies]
    return counts


PER_BATCH = 40


class Device:
    """Sends numbered batches until told to finish, retrying each until it is accepted,
    as the edge agent does (the same Idempotency-Key until a 200 or 202).

    Batch n holds readings n*PER_BATCH+1 … (n+1)*PER_BATCH, an hour ago at 10 per second."""

    def __init__(self, url: str, token: str, *, batch_prefix: str = "drill",
                 first_batch: int = 0, start: datetime | None = None) -> None:  # fmt: skip
        self.url = url
        # Fixed for the device's life: a batch sent again is the same batch.
        self.start = start or datetime.now(UTC) - timedelta(hours=1)
        self.token = token
        self.batch_prefix = batch_prefix
        self.sent = first_batch
        self.retries = 0
        self.finish = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with httpx.Client(timeout=15) as client:
                while not self.finish.is_set():
                    self.send(client, self.sent)
                    self.sent += 1
                    time.sleep(0.2)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def send(self, client: httpx.Client, batch: int) -> int:
        """Send batch `batch` until it is accepted; the status that accepted it."""
        readings = [
            {"seq": batch * PER_BATCH + i + 1,
             "ts": (self.start + timedelta(milliseconds=100 * (batch * PER_BATCH + i))).isoformat(),
             "metric": "temperature", "value": 20.0 + i / 10}
            for i in range(PER_BATCH)
        ]  # fmt: skip
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                response = client.post(
                    self.url, json=readings,
                    headers={"Authorization": f"Bearer {self.token}",
                             "Idempotency-Key": f"{self.batch_prefix}-{batch}"},
                )  # fmt: skip
                if response.status_code in (200, 202):
                    return response.status_code
                assert response.status_code in (503, 429), response.text
            except httpx.TransportError:
                pass
            self.retries += 1
            time.sleep(0.5)
        raise AssertionError(f"batch {batch} not accepted within 300 s")


def lakehouse(
    *args: str, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """`lakehouse ARGS` in a process of its own, as a user runs it (output captured)."""
    return subprocess.run(
        [sys.executable, "-m", "lakehouse", *args], capture_output=True, text=True,
        timeout=timeout, check=False, env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def probe(stack, stack_settings):
    """lake.gold.tenant_probe_*: 3 rows of tenant-01 (sum 6), 2 of tenant-02 (sum 9)."""
    table = f"lake.gold.tenant_probe_{uuid.uuid4().hex[:6]}"
    cursor = trino_connection(stack_settings).cursor()
    cursor.execute(f"create table {table} (tenant varchar, v integer)")
    cursor.fetchall()
    cursor.execute(
        f"insert into {table} values ('tenant-01', 1), ('tenant-01', 2), ('tenant-01', 3), "
        "('tenant-02', 4), ('tenant-02', 5)"
    )
    cursor.fetchall()
    yield table
    cursor.execute(f"drop table {table}")
    cursor.fetchall()
