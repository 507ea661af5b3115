"""Our services as containers of the image we ship, against the test stack's servers.

Each container gets what the chart and compose give it (the external-services path): the
platform's settings as `LAKEHOUSE_*` variables, every secret as a mounted read-only file
(`LAKEHOUSE_CREDENTIALS_DIR`), Trino's CA, a home volume of its own, the image's non-root user, a
read-only root, no capabilities. A reading posted to the containerised gateway travels
through the containerised consumer and transform to gold, and `lakehouse reconcile`,
also in a container, accounts for it.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from lakehouse_testing.lake import free_port

from lakehouse import registry
from lakehouse.clients import postgres_connection, trino_connection
from lakehouse.deployment import compose_env
from lakehouse.trino_access import write_files
from lakehouse.trino_users import principals
from tests.containers.conftest import lake_environment, mounted_secrets
from tests.containers.podman import Container, give_to_image_user, run
from tests.integration.conftest import topic_factory, wait_for_device

pytestmark = [pytest.mark.containers, pytest.mark.integration]

__all__ = ["topic_factory"]  # a fixture, used by name

READINGS = 25
CREDENTIALS = "/var/run/lakehouse/credentials"


@pytest.fixture(scope="module")
def deployed(stack, stack_settings, credentials, lake_prefix, tmp_path_factory) -> dict[str, Any]:
    """`podman run` options that give a container the test stack as its servers."""
    root = tmp_path_factory.mktemp("deployed")
    secrets, tls = mounted_secrets(root, credentials, stack_settings.home)
    env = (
        compose_env(stack_settings)
        | lake_environment(lake_prefix)
        | {
            "LAKEHOUSE_HOST": "127.0.0.1",
            "LAKEHOUSE_LOG_LEVEL": "INFO",
        }
    )
    assert env["LAKEHOUSE_CREDENTIALS_DIR"] == CREDENTIALS
    return {
        "env": env,
        "mounts": [(secrets, CREDENTIALS), (tls, "/var/lib/lakehouse/tls")],
        "scratch": ["/var/lib/lakehouse"],
    }


def options(deployed: dict[str, Any], **env: str) -> dict[str, Any]:
    return deployed | {"env": deployed["env"] | env}


def wait_ready(url: str, container: Container, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert container.running(), container.logs()[-3000:]
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer: {container.logs()[-3000:]}")


def test_bootstrap_in_a_container_sets_up_every_server(platform_image, deployed):
    result = run(platform_image, ["deploy", "bootstrap", "--wait", "60"], **deployed)
    assert result.returncode == 0, result.stderr[-3000:]
    done = [line.strip() for line in result.stderr.splitlines() if line.startswith("✓")]
    assert done == ["✓ postgres set up", "✓ minio set up", "✓ nessie set up", "✓ kafka set up",
                    "✓ serving roles and policies set up"]  # fmt: skip


def test_a_reading_through_the_containerised_services_reaches_gold_accounted_for(
    platform_image, deployed, stack_settings, credentials, topic_factory, lake_prefix
):
    topic = topic_factory(partitions=2)
    u = uuid.uuid4().hex[:8]
    device, tenant, site = f"ctr-pi-{u}", f"ctr-{u}", f"ctr-site-{u}"
    since = datetime.now(UTC) - timedelta(hours=1)
    with postgres_connection(stack_settings, credentials) as conn:
        conn.autocommit = True
        token = registry.register(conn, device, tenant=tenant, site=site, lat=46.9, lon=7.4,
                                  since=since)  # fmt: skip
    own_topic = options(deployed, LAKEHOUSE_KAFKA_TOPIC=topic)
    port = free_port()
    gateway = Container(platform_image, ["gateway"],
                        **options(own_topic, LAKEHOUSE_GATEWAY_PORT=str(port)))  # fmt: skip
    consumer = Container(platform_image, ["ingest", "kafka", "--topic", topic,
                                          "--group", f"g-{topic}", "--metrics-port", "0"],
                         **own_topic)  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", gateway)
        first = datetime.now(UTC) - timedelta(minutes=20)
        readings = [
            {"seq": n, "ts": (first + timedelta(seconds=10 * n)).isoformat(),
             "metric": "temperature", "value": 20 + n / 4}
            for n in range(1, READINGS + 1)
        ]  # fmt: skip
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/readings", json=readings, timeout=30,
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"ctr-{u}"},
        )  # fmt: skip
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == READINGS
        bronze = f"{lake_prefix}bronze.readings"
        assert wait_for_device(stack_settings, device, READINGS, table=bronze) == (
            READINGS, READINGS,
        )  # fmt: skip
        cursor = trino_connection(stack_settings).cursor()
        cursor.execute(
            f"select source_topic, count(*) from lake.{bronze} "
            f"where device_id = '{device}' group by 1"
        )
        assert cursor.fetchall() == [[topic, READINGS]]  # written by the container's consumer
    finally:
        codes = {"gateway": gateway.stop(), "consumer": consumer.stop()}
        logs = {"gateway": gateway.logs(), "consumer": consumer.logs()}
        gateway.remove()
        consumer.remove()
    # SIGTERM to PID 1: each drains and exits cleanly.
    assert codes == {"gateway": 0, "consumer": 0}, logs

    transform = run(platform_image, ["transform", "--quiet"], **own_topic)
    assert transform.returncode == 0, transform.stdout[-2000:] + transform.stderr[-3000:]
    cursor.execute(
        f"select sum(readings) from lake.{lake_prefix}gold.fct_device_hourly "
        f"where device_id = '{device}' and metric = 'temperature'"
    )
    assert cursor.fetchall() == [[READINGS]]

    reconcile = run(platform_image, ["reconcile", "--device", device], **own_topic)
    assert reconcile.returncode == 0, reconcile.stdout[-3000:] + reconcile.stderr[-3000:]


def test_a_maintenance_pass_in_a_container_is_recorded(platform_image, deployed, stack_settings,
                                                       credentials):  # fmt: skip
    with postgres_connection(stack_settings, credentials) as conn:
        exists = conn.execute("select to_regclass('maintenance.runs')").fetchone()[0]
        before = (
            conn.execute("select count(*) from maintenance.runs").fetchone()[0] if exists else 0
        )
    result = run(platform_image, ["maintain"], **deployed)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    with postgres_connection(stack_settings, credentials) as conn:
        runs = conn.execute("select count(*), max(outcome) filter (where finished_at = "
                            "(select max(finished_at) from maintenance.runs)) "
                            "from maintenance.runs").fetchone()  # fmt: skip
    assert (runs[0] - before, runs[1]) == (1, "done")


def test_the_audit_receiver_in_a_container_stores_trino_events(
    platform_image, deployed, stack_settings, credentials
):
    port = free_port()
    receiver = Container(platform_image, ["audit", "serve"],
                         **options(deployed, LAKEHOUSE_AUDIT_PORT=str(port)))  # fmt: skip
    query_id = f"ctr_{uuid.uuid4().hex[:12]}"
    event = {
        "metadata": {"queryId": query_id, "query": "select 1", "queryState": "FINISHED"},
        "context": {"user": "analyst-ctr", "principal": "analyst-ctr", "queryType": "SELECT"},
        "ioMetadata": {"inputs": [], "output": None},
        "createTime": "2026-12-07T10:00:00Z", "endTime": "2026-12-07T10:00:01Z",
    }  # fmt: skip
    url = f"http://127.0.0.1:{port}/trino/events"
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz", receiver)
        assert httpx.post(url, json=event, timeout=10).status_code == 401
        bearer = {"Authorization": f"Bearer {credentials.audit_token}"}
        assert httpx.post(url, json=event, headers=bearer, timeout=10).status_code == 204
    finally:
        code, logs = receiver.stop(), receiver.logs()
        receiver.remove()
    assert code == 0, logs
    with postgres_connection(stack_settings, credentials) as conn:
        rows = conn.execute(
            "select principal, outcome from audit.events where detail->>'query_id' = %s",
            (query_id,),
        ).fetchall()
    assert rows == [("analyst-ctr", "ok")]


def test_trinos_init_container_writes_the_rules_the_native_stack_writes(
    platform_image, deployed, stack_settings, credentials, tmp_path
):
    written = tmp_path / "security"
    written.mkdir()
    give_to_image_user(written)
    result = run(platform_image, ["deploy", "trino-security", "--out", "/etc/trino/security"],
                 writable=[(written, "/etc/trino/security")], **deployed)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    native = tmp_path / "native"
    native.mkdir()
    fresh_home = stack_settings.model_copy(update={"home": tmp_path / "home"})
    write_files(native, principals(fresh_home, credentials))
    for name in ("group.txt", "rules.json"):
        assert (written / name).read_text() == (native / name).read_text(), name
    users = [line.split(":")[0] for line in (written / "password.db").read_text().splitlines()]
    native_users = [
        line.split(":")[0] for line in (native / "password.db").read_text().splitlines()
    ]
    assert users == native_users and users
    assert json.loads((written / "rules.json").read_text())["catalogs"]


@pytest.mark.parametrize(
    ("steps", "done"),
    [
        (["postgres", "minio", "serving"],
         ["✓ postgres set up", "✓ minio set up", "✓ serving roles and policies set up"]),
        (["nessie", "kafka"], ["✓ nessie set up", "✓ kafka set up"]),
    ],
)  # fmt: skip
def test_compose_two_bootstrap_steps_each_set_up_only_their_servers(
    platform_image, deployed, steps, done
):
    only = [arg for step in steps for arg in ("--only", step)]
    result = run(platform_image, ["deploy", "bootstrap", "--wait", "60", *only], **deployed)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line.strip() for line in result.stderr.splitlines() if line.startswith("✓")] == done


def test_an_unknown_bootstrap_step_is_refused_naming_the_steps(platform_image, deployed):
    result = run(platform_image, ["deploy", "bootstrap", "--only", "trino"], **deployed)
    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert "unknown bootstrap step trino" in message
    assert "choose among postgres, minio, nessie, kafka, serving" in message
