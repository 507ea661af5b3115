"""compose/docker-compose.yml brought up for real by the docker compose plugin against
podman's Docker API, with the image we ship.

The upstream server images (PostgreSQL, MinIO, Nessie, Kafka, Trino, Superset) cannot be
pulled here, so what runs is every service of our own image: the one-shots that make the
credentials and Trino's files in fresh named volumes, then the gateway, consumers, audit
receiver, transform and maintenance loops, started from the compose file with an
override that points them at the test stack's servers (the compose file's own hosts,
`postgres`, `kafka` …, are those servers' containers).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from lakehouse_testing.devtools import docker_config_with_compose
from lakehouse_testing.lake import free_port

from lakehouse.config import default_settings
from lakehouse.deployment import compose_env, secret_keys
from tests.containers.conftest import lake_environment, mounted_secrets
from tests.containers.podman import environment, podman
from tests.integration.conftest import topic_factory, wait_for_device

pytestmark = [pytest.mark.containers, pytest.mark.integration]

__all__ = ["topic_factory"]  # a fixture, used by name

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
OURS = ("gateway", "consumers", "audit", "transform", "maintain")
READINGS = 20


@pytest.fixture(scope="module")
def docker_host(tmp_path_factory) -> Iterator[str]:
    """podman's Docker API on a socket of the tests' own."""
    socket = tmp_path_factory.mktemp("podman") / "docker.sock"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket}"], env=environment(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not socket.exists():
        assert service.poll() is None and time.monotonic() < deadline, "podman service failed"
        time.sleep(0.2)
    yield f"unix://{socket}"
    service.terminate()
    service.wait(30)


@dataclass
class Project:
    """One compose project: a name of its own, so nothing else on the machine is touched."""

    name: str
    docker_host: str
    env_file: Path
    files: list[Path]

    def environment(self) -> dict[str, str]:
        # The shell's variables win over --env-file in compose's interpolation: the tests'
        # own LAKEHOUSE_* (the test stack's ports) must not reach it.
        env = {k: v for k, v in environment().items() if not k.startswith("LAKEHOUSE_")}
        return env | {"DOCKER_HOST": self.docker_host}

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        plugin = docker_config_with_compose(default_settings().cache_dir) / "cli-plugins"
        command = [
            str(plugin / "docker-compose"),
            "-p",
            self.name,
            "--env-file",
            str(self.env_file),
        ]
        for file in self.files:
            command += ["-f", str(file)]
        return subprocess.run(
            [*command, *args], capture_output=True, text=True, timeout=timeout, check=False,
            cwd=COMPOSE, env=self.environment(),
        )  # fmt: skip


@pytest.fixture(scope="module")
def interpolation(platform_image) -> dict[str, str]:
    """The variables compose interpolates: platform.env's, and the images."""
    return compose_env(default_settings()) | {
        "LAKEHOUSE_IMAGE": platform_image,
        "LAKEHOUSE_SUPERSET_IMAGE": "localhost/lakehouse-superset:unbuilt",
    }


@pytest.fixture(scope="module")
def project(docker_host, interpolation, tmp_path_factory) -> Iterator[Project]:
    root = tmp_path_factory.mktemp("compose")
    env_file = root / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in interpolation.items()))
    project = Project(f"lakehouse-test-{uuid.uuid4().hex[:8]}", docker_host, env_file,
                      [COMPOSE / "docker-compose.yml"])  # fmt: skip
    yield project
    project("down", "--volumes", "--remove-orphans", timeout=300)


def containers(project: Project, *services: str) -> dict[str, str]:
    result = project("ps", "--all", "--format", "json", *services)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return {c["Service"]: c["Name"] for c in lines}


def wait_healthy(project: Project, services: tuple[str, ...], timeout: float) -> dict[str, bool]:
    """Run each service's compose health check until it passes (podman runs them from
    systemd timers, which a machine without systemd lacks, so the test runs them)."""
    names = containers(project, *services)
    healthy = dict.fromkeys(services, False)
    deadline = time.monotonic() + timeout
    while not all(healthy.values()) and time.monotonic() < deadline:
        for service, name in names.items():
            if not healthy[service]:
                check = podman("healthcheck", "run", name, check=False)
                healthy[service] = check.returncode == 0
        time.sleep(1)
    return healthy


def states(project: Project, *services: str) -> dict[str, tuple[str, int]]:
    result = project("ps", "--all", "--format", "json", *services)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return {c["Service"]: (c["State"], c["ExitCode"]) for c in lines}


def test_the_one_shots_make_credentials_and_trinos_files_in_fresh_volumes(project):
    result = project("up", "credentials", "trino-config")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert states(project, "credentials", "trino-config") == {
        "credentials": ("exited", 0), "trino-config": ("exited", 0),
    }  # fmt: skip
    # The services read the generated files as the image's user, from the named volume.
    probe = (
        "import os, json, pwd; d = '/var/run/lakehouse/credentials'; "
        "st = lambda p: [oct(os.stat(p).st_mode & 0o777), "
        "pwd.getpwuid(os.stat(p).st_uid).pw_name]; "
        "print(json.dumps([st(d), st(d + '/audit-token'), len(os.listdir(d)), "
        "len(open(d + '/audit-token').read().strip()) > 20]))"
    )
    result = project("run", "--rm", "--no-deps", "--entrypoint", "python", "gateway", "-c", probe)
    assert result.returncode == 0, result.stderr[-3000:]
    listing = json.loads(result.stdout.strip().splitlines()[-1])
    keys = len(secret_keys())
    assert listing == [["0o750", "lakehouse"], ["0o640", "lakehouse"], keys, True]


SERVERS = {f"LAKEHOUSE_{s.upper()}_HOST": "127.0.0.1"
           for s in ("postgres", "minio", "nessie", "trino", "kafka")}  # fmt: skip


def free_ports(*names: str) -> dict[str, str]:
    free: set[str] = set()
    while len(free) < len(names):  # the kernel may hand out one port twice
        free.add(str(free_port()))
    return dict(zip(names, sorted(free), strict=True))


def on_test_servers(project: Project, root: Path, credentials, stack_settings,
                    services: dict[str, dict], env: dict[str, str]) -> Project:  # fmt: skip
    """The project with an override that runs `services` on the host's network against
    the test stack: its credentials as the mounted files, its CA, `env` as their
    environment and as the variables compose interpolates."""
    secrets, tls = mounted_secrets(root, credentials, stack_settings.home)
    mounts = {
        "credentials": {"type": "bind", "source": str(secrets), "read_only": True,
                        "target": "/var/run/lakehouse/credentials"},
        "tls": {"type": "bind", "source": str(tls), "target": "/var/lib/lakehouse/tls",
                "read_only": True},
    }  # fmt: skip
    override = {"services": {
        name: {"network_mode": "host", "volumes": [mounts[m] for m in wanted["mounts"]]}
        | ({"environment": env} if wanted.get("environment", True) else {})
        for name, wanted in services.items()
    }}  # fmt: skip
    override_file = root / "test-servers.yml"
    # `ports: !reset []`: on the host's network there is nothing to publish.
    text = yaml.safe_dump(override)
    override_file.write_text(
        text.replace("network_mode: host", "network_mode: host\n    ports: !reset []")
    )
    env_file = root / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return Project(project.name, project.docker_host, env_file, [*project.files, override_file])


def test_our_services_come_up_healthy_from_the_compose_file_and_carry_readings(
    project, interpolation, stack, stack_settings, credentials, topic_factory, tmp_path,
    lake_prefix,
):  # fmt: skip
    topic = topic_factory(partitions=2)
    ports = free_ports("LAKEHOUSE_GATEWAY_PORT", "LAKEHOUSE_AUDIT_PORT",
                       "LAKEHOUSE_INGEST_METRICS_PORT", "LAKEHOUSE_TRANSFORM_METRICS_PORT",
                       "LAKEHOUSE_MAINTAIN_METRICS_PORT")  # fmt: skip
    env = compose_env(stack_settings) | ports | SERVERS | lake_environment(lake_prefix) | {
        "LAKEHOUSE_HOST": "127.0.0.1", "LAKEHOUSE_GATEWAY_HOST": "127.0.0.1",
        "LAKEHOUSE_KAFKA_TOPIC": topic, "LAKEHOUSE_INGEST_GROUP_ID": f"g-{topic}",
        "LAKEHOUSE_LOG_LEVEL": "INFO",
    }  # fmt: skip
    servers_project = on_test_servers(
        project, tmp_path, credentials, stack_settings,
        {name: {"mounts": ["credentials", "tls"]} for name in OURS}, interpolation | env,
    )  # fmt: skip
    result = servers_project("up", "--detach", "--no-deps", *OURS)
    assert result.returncode == 0, result.stderr[-3000:]
    try:
        healthy = wait_healthy(servers_project, OURS, timeout=180)
    finally:
        (tmp_path / "services.log").write_text(servers_project("logs", "--no-color").stdout)
    assert healthy == dict.fromkeys(OURS, True), f"{ports}: see {tmp_path / 'services.log'}"

    u = uuid.uuid4().hex[:8]
    device = f"compose-pi-{u}"
    from lakehouse import registry
    from lakehouse.clients import postgres_connection, trino_connection

    with postgres_connection(stack_settings, credentials) as conn:
        conn.autocommit = True
        token = registry.register(conn, device, tenant=f"compose-{u}", site=f"compose-site-{u}",
                                  lat=47.0, lon=8.0,
                                  since=datetime.now(UTC) - timedelta(hours=1))  # fmt: skip
    start = datetime.now(UTC) - timedelta(minutes=10)
    readings = [
        {"seq": n, "ts": (start + timedelta(seconds=n)).isoformat(), "metric": "humidity",
         "value": 40.0 + n}
        for n in range(1, READINGS + 1)
    ]  # fmt: skip
    response = httpx.post(
        f"http://127.0.0.1:{ports['LAKEHOUSE_GATEWAY_PORT']}/v1/readings", json=readings,
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"compose-{u}"},
        timeout=30,
    )  # fmt: skip
    assert response.status_code == 202, response.text
    bronze = f"{lake_prefix}bronze.readings"
    assert wait_for_device(stack_settings, device, READINGS, table=bronze) == (READINGS, READINGS)
    cursor = trino_connection(stack_settings).cursor()
    cursor.execute(f"select distinct source_topic from lake.{bronze} where device_id = '{device}'")
    assert cursor.fetchall() == [[topic]]
    began = time.monotonic()
    stopped = servers_project("stop", *OURS, timeout=300)
    print("stop took", time.monotonic() - began)
    assert stopped.returncode == 0, stopped.stderr
    assert {name: code for name, (_, code) in states(servers_project, *OURS).items()} == {
        name: 0 for name in OURS
    }, servers_project("logs", "--no-color", *OURS).stdout[-6000:]


def test_superset_comes_up_healthy_from_the_compose_file_with_its_dashboards(
    project, interpolation, superset_image, stack, stack_settings, credentials, tmp_path
):
    ports = free_ports("LAKEHOUSE_SUPERSET_PORT")
    env = compose_env(stack_settings) | ports | SERVERS | {"LAKEHOUSE_HOST": "127.0.0.1"}
    servers_project = on_test_servers(
        project, tmp_path, credentials, stack_settings,
        {"superset-init": {"mounts": ["credentials", "tls"]},
         # Superset takes its settings from the runtime file superset-init writes.
         "superset": {"mounts": ["tls"], "environment": False}},
        interpolation | env | {"LAKEHOUSE_SUPERSET_IMAGE": superset_image},
    )  # fmt: skip
    init = servers_project("up", "--no-deps", "superset-init")
    assert init.returncode == 0, init.stdout[-3000:] + init.stderr[-3000:]
    assert states(servers_project, "superset-init") == {"superset-init": ("exited", 0)}
    started = servers_project("up", "--detach", "--no-deps", "superset")
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        healthy = wait_healthy(servers_project, ("superset",), timeout=420)
    finally:
        (tmp_path / "superset.log").write_text(servers_project("logs", "--no-color").stdout)
    assert healthy == {"superset": True}, f"see {tmp_path / 'superset.log'}"
    url = f"http://127.0.0.1:{ports['LAKEHOUSE_SUPERSET_PORT']}"
    login = httpx.post(f"{url}/api/v1/security/login", timeout=30, json={
        "username": stack_settings.superset.admin_user, "provider": "db", "refresh": False,
        "password": credentials.superset_admin_password,
    })  # fmt: skip
    assert login.status_code == 200, login.text
    bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
    dashboards = httpx.get(f"{url}/api/v1/dashboard/", headers=bearer, timeout=30)
    assert dashboards.status_code == 200, dashboards.text
    titles = {d["dashboard_title"] for d in dashboards.json()["result"]}
    assert {"Fleet overview", "Site KPIs", "Anomalies", "Device map"} <= titles
    stopped = servers_project("stop", "superset", timeout=300)
    assert stopped.returncode == 0, stopped.stderr
    assert states(servers_project, "superset") == {"superset": ("exited", 0)}
