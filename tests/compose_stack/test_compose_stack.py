"""`make test-compose`, on a machine with a Docker engine: compose/docker-compose.yml
started through testcontainers, under a project name and ports of its own (so a
platform started with compose on the same machine is never touched). Readings sent to
its gateway are counted by its Trino in bronze, exactly."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from testcontainers.compose import DockerCompose

from lakehouse.config import default_settings
from lakehouse.deployment import compose_env

pytestmark = pytest.mark.compose

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
PORT_SHIFT = 35_000
READINGS = 200


@pytest.fixture(scope="module")
def platform(tmp_path_factory) -> Iterator[tuple[DockerCompose, dict[str, str]]]:
    env = {
        key: str(int(value) + PORT_SHIFT) if key.endswith("_PORT") else value
        for key, value in compose_env(default_settings()).items()
    }
    env |= {
        "LAKEHOUSE_IMAGE": os.environ["LAKEHOUSE_TEST_IMAGE"],
        "LAKEHOUSE_SUPERSET_IMAGE": os.environ["LAKEHOUSE_TEST_SUPERSET_IMAGE"],
        "LAKEHOUSE_BIND": "127.0.0.1",
        "LAKEHOUSE_TRANSFORM_EVERY": "30",
        "LAKEHOUSE_TRINO_HEAP": "2G",
    }
    env_file = tmp_path_factory.mktemp("compose") / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    os.environ["COMPOSE_PROJECT_NAME"] = f"lakehouse-test-{uuid.uuid4().hex[:8]}"
    compose = DockerCompose(
        COMPOSE, compose_file_name="docker-compose.yml", env_file=str(env_file), wait=True
    )
    compose.start()
    try:
        yield compose, env
    finally:
        compose.stop(down=True)


def lakehouse(compose: DockerCompose, *args: str) -> str:
    stdout, stderr, code = compose.exec_in_container(["lakehouse", *args], "gateway")
    assert code == 0, stderr
    return stdout


def test_readings_sent_to_the_gateway_are_counted_in_bronze(platform):
    compose, env = platform
    device = f"compose-{uuid.uuid4().hex[:6]}"
    token = lakehouse(compose, "devices", "register", device, "--tenant", "acme",
                      "--site", "plant-1").strip().splitlines()[-1]  # fmt: skip
    start = datetime.now(UTC) - timedelta(minutes=30)
    readings = [
        {"seq": n, "ts": (start + timedelta(seconds=n)).isoformat(), "metric": "temperature",
         "value": 20 + n / 100}
        for n in range(1, READINGS + 1)
    ]  # fmt: skip
    response = httpx.post(
        f"http://127.0.0.1:{env['LAKEHOUSE_GATEWAY_PORT']}/v1/readings", json=readings,
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "first"}, timeout=30,
    )  # fmt: skip
    assert response.status_code == 202, response.text
    count = (
        "from lakehouse.clients import trino_connection; from lakehouse.config import Settings;"
        "c = trino_connection(Settings()).cursor();"
        f"c.execute(\"select count(*) from lake.bronze.readings where device_id = '{device}'\");"
        "print(c.fetchall()[0][0])"
    )
    deadline, found = time.monotonic() + 300, None
    while time.monotonic() < deadline:
        stdout, _, code = compose.exec_in_container(["python", "-c", count], "gateway")
        found = int(stdout.strip()) if code == 0 and stdout.strip().isdigit() else None
        if found == READINGS:
            break
        time.sleep(5)
    assert found == READINGS
