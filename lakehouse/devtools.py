"""Pinned tools that check the chart and the compose file, built from their Go modules.

Helm and the docker compose plugin publish binaries only on sites this project does not
depend on; the Go module proxy serves their source, checked against the Go checksum
database. Each is built once into `<cache>/tools` and reused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from lakehouse.errors import FetchError, PrerequisiteError

HELM_MODULE = "helm.sh/helm/v4"
HELM_VERSION = "v4.3.2"
COMPOSE_MODULE = "github.com/docker/compose/v2"
COMPOSE_VERSION = "v2.40.3"
BUILD_TIMEOUT = 1800


def _go() -> str:
    go = shutil.which("go") or next(
        (str(p) for p in (Path("/usr/local/go/bin/go"),) if p.exists()), None
    )
    if go is None:
        raise PrerequisiteError(
            "building the chart and compose tools needs Go",
            fix="install Go 1.24 or newer (the golang-go package)",
        )
    return go


def _run(command: list[str], cwd: Path | None = None, **env: str) -> str:
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False,
        env={**os.environ, "GOFLAGS": "-buildvcs=false", "CGO_ENABLED": "0", **env},
    )  # fmt: skip
    if result.returncode != 0:
        raise FetchError(f"{' '.join(command[:3])} failed: {result.stderr[-2000:]}")
    return result.stdout


def helm(cache_dir: Path) -> Path:
    """The helm binary of HELM_VERSION, built with `go install` on first use."""
    tools = cache_dir / "tools" / f"helm-{HELM_VERSION}"
    binary = tools / "helm"
    if not binary.exists():
        tools.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=tools) as staging:
            _run([_go(), "install", f"{HELM_MODULE}/cmd/helm@{HELM_VERSION}"], GOBIN=staging)
            (Path(staging) / "helm").rename(binary)
    return binary


def docker_config_with_compose(cache_dir: Path) -> Path:
    """A DOCKER_CONFIG directory whose cli-plugins hold docker compose COMPOSE_VERSION.

    `go install` refuses the module (its go.mod has exclude directives), so its source is
    downloaded through the module proxy and built in a copy."""
    config = cache_dir / "tools" / f"docker-compose-{COMPOSE_VERSION}"
    plugin = config / "cli-plugins" / "docker-compose"
    if plugin.exists():
        return config
    go = _go()
    module = f"{COMPOSE_MODULE}@{COMPOSE_VERSION}"
    download = json.loads(_run([go, "mod", "download", "-json", module]))
    source = Path(download["Dir"])
    plugin.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=config) as staging:
        copy = Path(staging) / "src"
        shutil.copytree(source, copy)
        for path in copy.rglob("*"):  # the module cache is read-only
            path.chmod(path.stat().st_mode | 0o200)
        built = Path(staging) / "docker-compose"
        _run([go, "build", "-o", str(built), "./cmd"], cwd=copy)
        built.rename(plugin)
    return config
