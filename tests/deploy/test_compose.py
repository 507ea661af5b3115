"""compose/: `docker compose config` with the example environment, and the same services,
ports and secrets handling as the chart and the native stack."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lakehouse.config import default_settings
from lakehouse.deployment import component_of, components, compose_env
from tests.deploy.conftest import COMPOSE, native_services

pytestmark = pytest.mark.deploy

ONE_SHOTS = {"credentials", "bootstrap-storage", "bootstrap", "trino-config", "superset-init"}


def test_the_demo_fleet_runs_only_when_asked_for(docker_config):
    plain = compose(docker_config, "config", "--services").stdout.split()
    with_demo = compose(docker_config, "--profile", "demo", "config", "--services").stdout.split()
    assert "demo" not in plain and set(with_demo) - set(plain) == {"demo"}


def compose(docker_config: Path, *args: str, env_file: Path | None = None):
    env_files = ["--env-file", str(COMPOSE / "platform.env"),
                 "--env-file", str(env_file or COMPOSE / ".env.example")]  # fmt: skip
    # The plugin runs standalone too, so no docker client is needed.
    plugin = docker_config / "cli-plugins" / "docker-compose"
    return subprocess.run(
        [str(plugin), "-f", str(COMPOSE / "docker-compose.yml"), *env_files, *args],
        capture_output=True, text=True, timeout=120, check=False,
        env={"DOCKER_CONFIG": str(docker_config), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def config(docker_config) -> dict[str, Any]:
    result = compose(docker_config, "--profile", "demo", "config", "--format", "yaml")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_the_compose_file_is_valid_with_the_example_environment(docker_config):
    result = compose(docker_config, "config", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


IMAGE_SETTINGS = ["LAKEHOUSE_IMAGE", "LAKEHOUSE_SUPERSET_IMAGE"]


def test_the_example_environment_sets_every_image():
    example = (COMPOSE / ".env.example").read_text()
    assert re.findall(r"^(LAKEHOUSE_\w*IMAGE)=", example, re.MULTILINE) == IMAGE_SETTINGS


@pytest.mark.parametrize("missing", IMAGE_SETTINGS)
def test_a_missing_image_setting_is_a_clear_error(docker_config, tmp_path, missing):
    example = (COMPOSE / ".env.example").read_text().splitlines()
    env = tmp_path / "partial.env"
    env.write_text("\n".join(line for line in example if not line.startswith(f"{missing}=")))
    result = compose(docker_config, "config", "-q", env_file=env)
    assert result.returncode == 1
    assert f"required variable {missing} is missing a value: set {missing} in .env" in result.stderr


def test_compose_runs_every_component_and_every_native_service(config):
    services = set(config["services"])
    assert set(components(default_settings())) <= services
    assert {component_of(name) for name in native_services()} <= services
    assert services - set(components(default_settings())) == {
        "credentials",
        "bootstrap-storage",
        "trino-config",
        "superset-init",
    }


def test_servers_are_healthchecked_restarted_and_one_shots_run_once(config):
    for name, service in config["services"].items():
        if name in ONE_SHOTS:
            assert service["restart"] == "no", name
        else:
            assert service["restart"] == "unless-stopped", name
            assert service["healthcheck"]["test"], name
        assert not service["image"].endswith(":latest"), name


def test_only_the_gateway_trino_and_superset_are_published_on_loopback(config):
    published = {
        name: [(p["host_ip"], int(p["published"]), p["target"]) for p in service["ports"]]
        for name, service in config["services"].items()
        if service.get("ports")
    }
    ports = {name: c.port for name, c in components(default_settings()).items()}
    assert published == {
        name: [("127.0.0.1", ports[name], ports[name])] for name in ("gateway", "trino", "superset")
    }


def test_ports_and_names_are_the_native_stacks(config):
    env = compose_env(default_settings())
    gateway = config["services"]["gateway"]["environment"]
    for key in ("LAKEHOUSE_GATEWAY_PORT", "LAKEHOUSE_KAFKA_TOPIC", "LAKEHOUSE_MINIO_BUCKET",
                "LAKEHOUSE_INGEST_METRICS_PORT", "LAKEHOUSE_CREDENTIALS_DIR"):  # fmt: skip
        assert gateway[key] == env[key], key
    assert gateway["LAKEHOUSE_POSTGRES_HOST"] == "postgres"
    nessie = config["services"]["nessie"]["environment"]
    assert nessie["QUARKUS_HTTP_PORT"] == env["LAKEHOUSE_NESSIE_PORT"]


def test_no_secret_is_written_in_the_compose_file(config):
    text = (COMPOSE / "docker-compose.yml").read_text() + (COMPOSE / ".env.example").read_text()
    # Every secret-like assignment reads a file of the credentials volume (or, in Trino's
    # files, a variable set from one, or the Nessie token trino-config minted from one).
    # An access key's id is a name, not a secret.
    assigned = re.findall(
        r"(?i)(?<!access-)(?:password|secret|token|key)[a-z_]*=\"?([^\"\n]*)", text
    )
    assert len(assigned) >= 8
    read = ("$$(cat /credentials/", "$$(pw ", "$${ENV:", "$$(cat /etc/trino/security/nessie-token)")
    assert all(any(r in v for r in read) for v in assigned), assigned
    for name, service in config["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if key.endswith("_ISSUER"):  # a token's issuer is a name
                continue
            if any(word in key for word in ("PASSWORD", "SECRET", "TOKEN")):
                assert value is None or value.startswith("/"), (name, key)  # a file path
        if name not in ONE_SHOTS and name not in ("superset",):
            volumes = [v["target"] for v in service.get("volumes", [])]
            assert any("credentials" in target for target in volumes), name


def test_forgetting_platform_env_is_an_error_that_names_it(docker_config):
    plugin = docker_config / "cli-plugins" / "docker-compose"
    result = subprocess.run(
        [str(plugin), "-f", str(COMPOSE / "docker-compose.yml"),
         "--env-file", str(COMPOSE / ".env.example"), "config", "-q"],
        capture_output=True, text=True, timeout=120, check=False,
        env={"DOCKER_CONFIG": str(docker_config), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 1
    assert "is missing a value: run compose with --env-file platform.env" in result.stderr


def after(config: dict[str, Any], name: str) -> set[str]:
    """Every service `name` waits for, directly or through others."""
    seen: set[str] = set()
    todo = list(config["services"][name].get("depends_on") or {})
    while todo:
        service = todo.pop()
        if service not in seen:
            seen.add(service)
            todo += list(config["services"][service].get("depends_on") or {})
    return seen


def test_nessie_starts_after_the_step_that_makes_its_database_and_key(config):
    services = config["services"]
    storage = services["bootstrap-storage"]
    assert storage["command"] == ["deploy", "bootstrap", "--only", "postgres", "--only", "minio",
                                  "--only", "serving"]  # fmt: skip
    assert services["nessie"]["depends_on"]["bootstrap-storage"]["condition"] == (
        "service_completed_successfully"
    )
    assert "nessie" not in after(config, "bootstrap-storage")
    assert services["bootstrap"]["command"] == ["deploy", "bootstrap", "--only", "nessie",
                                                "--only", "kafka"]  # fmt: skip
    assert {"nessie", "kafka", "bootstrap-storage"} <= after(config, "bootstrap")
    for name in services:  # no service waits for itself, however indirectly
        assert name not in after(config, name), name


def test_every_service_of_our_image_is_stopped_gracefully_and_runs_unprivileged(config):
    ours = {n: s for n, s in config["services"].items()
            if s["image"] == config["services"]["gateway"]["image"]}  # fmt: skip
    assert set(ours) >= {"bootstrap", "bootstrap-storage", "gateway", "consumers", "transform",
                         "maintain", "audit", "trino-config", "superset-init", "demo"}  # fmt: skip
    for name, service in ours.items():
        if name == "credentials":
            continue
        assert service["stop_grace_period"] == ("2m0s" if name == "transform" else "30s"), name
        assert service["cap_drop"] == ["ALL"], name
        homes = [v for v in service["volumes"] if v["target"] == "/var/lib/lakehouse"]
        assert len(homes) == 1, name


def test_superset_image_installs_what_the_native_stack_installs():
    from lakehouse.stack.superset import EXTRA_REQUIREMENTS

    lines = (COMPOSE / "superset-requirements.txt").read_text().splitlines()
    wanted = [line for line in lines if line and not line.startswith("#")]
    version = default_settings().superset.version
    assert wanted == [f"apache-superset[postgres,trino]=={version}", *EXTRA_REQUIREMENTS,
                      "gunicorn"]  # fmt: skip
    locked = (COMPOSE / "superset-constraints.txt").read_text()
    assert f"\napache_superset=={version}\n" in locked
