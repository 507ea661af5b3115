"""The chart and the compose file, checked offline with the real tools (built once from
their Go modules into the cache; see lakehouse_testing.devtools), and the chart against a real
Kubernetes API server (tests.deploy.kube)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lakehouse_testing.devtools import docker_config_with_compose, helm

from lakehouse.config import default_settings
from lakehouse.stack.manager import Stack
from tests.deploy.kube import ApiServer, start_api_server

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "lakehouse"
COMPOSE = ROOT / "compose"
SCENARIOS = ("default", "dev", "ha", "external", "external-irsa", "scheduling")
# Users run either; each is built as its upstream release is.
HELM_MAJORS = (3, 4)


@pytest.fixture(scope="session", params=HELM_MAJORS, ids=lambda major: f"helm{major}")
def helm_binary(request: pytest.FixtureRequest) -> Path:
    return helm(default_settings().cache_dir, request.param)


@pytest.fixture(scope="session")
def docker_config() -> Path:
    return docker_config_with_compose(default_settings().cache_dir)


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """etcd and kube-apiserver on loopback for the session (no kubelet: pods never run)."""
    with start_api_server(default_settings().cache_dir, tmp_path_factory.mktemp("kube")) as api:
        yield api


def run_helm(
    binary: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=300, check=False, env=env
    )


def values_args(scenario: str) -> list[str]:
    """`-f ci/<scenario>-values.yaml`, or nothing for the defaults."""
    return [] if scenario == "default" else ["-f", str(CHART / "ci" / f"{scenario}-values.yaml")]


def render_text(binary: Path, scenario: str, *extra: str) -> str:
    args = ["template", "lh", str(CHART), "--namespace", "data", *values_args(scenario), *extra]
    result = run_helm(binary, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(binary: Path, scenario: str, *extra: str) -> list[dict[str, Any]]:
    """Every object `helm template` renders for a scenario (ci/<scenario>-values.yaml)."""
    return [doc for doc in yaml.safe_load_all(render_text(binary, scenario, *extra)) if doc]


@pytest.fixture(scope="session")
def rendered(helm_binary: Path) -> dict[str, list[dict[str, Any]]]:
    return {scenario: render(helm_binary, scenario) for scenario in SCENARIOS}


def native_services() -> list[str]:
    """What the native supervisor runs with every service of ours on."""
    settings = default_settings()
    settings.supervisor.consumers = 2
    return Stack(settings).names()
