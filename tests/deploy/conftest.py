"""The chart and the compose file, checked offline with the real tools (built once from
their Go modules into the cache; see lakehouse.devtools)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lakehouse.config import default_settings
from lakehouse.devtools import docker_config_with_compose, helm
from lakehouse.stack.manager import Stack

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "lakehouse"
COMPOSE = ROOT / "compose"
SCENARIOS = ("default", "dev", "ha", "external")


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    return helm(default_settings().cache_dir)


@pytest.fixture(scope="session")
def docker_config() -> Path:
    return docker_config_with_compose(default_settings().cache_dir)


def run_helm(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=300, check=False
    )


def render(binary: Path, scenario: str, *extra: str) -> list[dict[str, Any]]:
    """Every object `helm template` renders for a scenario (ci/<scenario>-values.yaml)."""
    values = [] if scenario == "default" else ["-f", str(CHART / "ci" / f"{scenario}-values.yaml")]
    result = run_helm(binary, "template", "lh", str(CHART), "--namespace", "data", *values, *extra)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def rendered(helm_binary) -> dict[str, list[dict[str, Any]]]:
    return {scenario: render(helm_binary, scenario) for scenario in SCENARIOS}


def native_services() -> list[str]:
    """What the native supervisor runs with every service of ours on."""
    settings = default_settings()
    settings.supervisor.consumers = 2
    return Stack(settings).names()
