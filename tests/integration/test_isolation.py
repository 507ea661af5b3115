"""`make test` never touches the user's lakehouse.

A lakehouse of the user's runs (a home and ports of its own, with a device, receipts and
readings in its topic), and the shell that runs the tests exports its LAKEHOUSE_*
variables, as a user's would. Tests that register devices, upload, merge into main and
stop Kafka and PostgreSQL then run; the user's main, every Nessie reference, the
registry and the topic's end offsets are exactly as they were, and nothing of it was
stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from lakehouse import registry
from lakehouse.clients import kafka_config, postgres_connection
from lakehouse.config import Settings, environment_variables, isolated_environment
from lakehouse.credentials import load
from lakehouse.nessie import NessieClient
from tests.integration.conftest import lakehouse, wait_for_device

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
USER_FIRST_PORT = 21_100
# Tests that write to the registry, Kafka, bronze and main, and stop servers.
INNER_TESTS = (
    "tests/integration/test_gateway.py::test_accepted_batch_reaches_kafka_with_the_tokens_identity",
    "tests/integration/test_gateway.py::test_outage_gives_503_with_retry_after_and_recovery",
    "tests/integration/test_nessie_branches.py::test_branch_table_appears_on_main_only_after_merge",
)
REGISTRY_TABLES = ("tenants", "sites", "devices", "device_tokens", "upload_batches")


@pytest.fixture
def user_lakehouse(stack, stack_settings):
    """The user's lakehouse: its own home and ports; purged after the test."""
    home = stack_settings.home.with_name(f"{stack_settings.home.name}-user")
    variables = isolated_environment(home, USER_FIRST_PORT)
    # Addresses a user may export, which the isolated ports alone would not override.
    kafka, minio = variables["LAKEHOUSE_KAFKA_PORT"], variables["LAKEHOUSE_MINIO_PORT"]
    variables |= {
        "LAKEHOUSE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka}",
        "LAKEHOUSE_MINIO_ENDPOINT": f"http://127.0.0.1:{minio}",
    }
    env = {**os.environ, **variables}
    lakehouse("stack", "down", "--purge", env=env)  # what an aborted run left
    up = lakehouse("stack", "up", env=env)
    assert up.returncode == 0, up.stderr[-3000:]
    with environment_variables(variables):
        settings = Settings()
    try:
        yield settings, variables
    finally:
        lakehouse("stack", "down", "--purge", env=env)


def snapshot(settings: Settings) -> dict[str, object]:
    """Everything a test could change in a lakehouse: references, registry, topic."""
    with NessieClient(settings) as nessie:
        references = sorted((r.name, r.hash) for r in nessie.references())
    credentials = load(settings)
    with postgres_connection(settings, credentials) as conn:
        rows = {
            table: conn.execute(
                f"select count(*), md5(coalesce(string_agg(t::text, '|' order by t::text), '')) "
                f"from registry.{table} t"
            ).fetchone()
            for table in REGISTRY_TABLES
        }
    consumer = Consumer({**kafka_config(settings, "admin"), "group.id": "isolation-check"})
    try:
        ends = [
            consumer.get_watermark_offsets(
                TopicPartition(settings.kafka.topic, p), timeout=30, cached=False
            )
            for p in range(settings.kafka.partitions)
        ]
    finally:
        consumer.close()
    return {"references": references, "registry": rows, "topic": ends}


def test_a_test_run_leaves_the_users_running_lakehouse_exactly_as_it_was(user_lakehouse):
    user, variables = user_lakehouse
    with postgres_connection(user, load(user)) as conn:
        conn.autocommit = True
        token = registry.register(
            conn, "users-own-pi", tenant="home", site="garden", lat=46.9, lon=7.4
        )
    reading = {
        "seq": 1,
        "ts": datetime.now(UTC).isoformat(),
        "metric": "temperature",
        "value": 21.5,
    }
    sent = httpx.post(
        f"http://127.0.0.1:{user.gateway.port}/v1/readings", json=[reading], timeout=30,
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "users-batch"},
    )  # fmt: skip
    assert sent.status_code == 202, sent.text
    # Settled: the user's consumer has committed the reading to bronze (a commit on main).
    assert wait_for_device(user, "users-own-pi", 1)[0] == 1
    before = snapshot(user)
    assert sum(end for _, end in before["topic"]) >= 1  # type: ignore[attr-defined]

    # The user's variables are exported in the shell that runs the tests.
    inner = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *INNER_TESTS],
        cwd=ROOT, env={**os.environ, **variables}, capture_output=True, text=True,
        timeout=1800, check=False,
    )  # fmt: skip
    assert inner.returncode == 0, inner.stdout[-3000:]
    assert "4 passed" in inner.stdout

    assert snapshot(user) == before
    status = lakehouse("stack", "status", "--json", env={**os.environ, **variables})
    rows = {row["name"]: row for row in json.loads(status.stdout)}
    assert all(row["state"] == "running" and row["restarts"] == 0 for row in rows.values()), rows
