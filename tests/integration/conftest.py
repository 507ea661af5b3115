from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
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


def readings_envelope(
    device: str, number: int, per_envelope: int, *, tenant: str, site: str, ts: str, value: float
) -> dict[str, Any]:
    """The `number`-th envelope of `device` as the gateway produces it (seq from 1 on)."""
    readings = [
        {"seq": number * per_envelope + i + 1, "ts": ts, "metric": "temperature", "value": value}
        for i in range(per_envelope)
    ]
    return {"device_id": device, "tenant": tenant, "site": site,
            "batch_id": f"{device}-{number}", "readings": readings}  # fmt: skip


def bronze_counts(settings, topic: str, table: str = "bronze.readings") -> tuple[int, int]:
    """(rows, distinct partition/offset pairs) in a readings table from one topic."""
    cursor = trino_connection(settings).cursor()
    cursor.execute(
        "select count(*), count(distinct (source_partition, source_offset)) "
        f"from lake.{table} where source_topic = '{topic}'"
    )
    rows, distinct = cursor.fetchall()[0]
    return rows, distinct


def device_counts(settings, device: str, table: str = "bronze.readings") -> tuple[int, int]:
    """(rows, distinct seq) of one device in a readings table."""
    cursor = trino_connection(settings).cursor()
    cursor.execute(
        f"select count(*), count(distinct seq) from lake.{table} where device_id = '{device}'"
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


def wait_for_device(settings, device: str, expected: int, timeout: float = 180) -> tuple[int, int]:
    """Poll until the device has `expected` bronze rows (or the time is up)."""
    return _poll(lambda: device_counts(settings, device), expected, timeout)


def wait_for_rows(settings, topic: str, expected: int, timeout: float = 180) -> tuple[int, int]:
    """Poll until the topic has `expected` bronze rows (or the time is up)."""
    return _poll(lambda: bronze_counts(settings, topic), expected, timeout)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
