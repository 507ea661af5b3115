from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from lakehouse.clients import kafka_config, trino_connection


@pytest.fixture
def topic_factory(stack, stack_settings, unique) -> Iterator:
    admin = AdminClient(kafka_config(stack_settings))
    created: list[str] = []

    def make(partitions: int = 6, name: str | None = None) -> str:
        topic = name or f"t-{unique}-{len(created)}"
        admin.create_topics([NewTopic(topic, num_partitions=partitions)])[topic].result(30)
        created.append(topic)
        return topic

    yield make
    if created:
        for future in admin.delete_topics(created).values():
            future.result(30)


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


def wait_for_rows(settings, topic: str, expected: int, timeout: float = 180) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    counts = bronze_counts(settings, topic)
    while counts[0] < expected and time.monotonic() < deadline:
        time.sleep(2)
        counts = bronze_counts(settings, topic)
    return counts


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
