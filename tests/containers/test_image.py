"""The image we ship, started as a container: every module its commands import is in it,
every command answers, it runs as its own user on a read-only root, and it holds exactly
the versions compose/constraints.txt names."""

from __future__ import annotations

import json
import pkgutil
import re

import lakehouse_edge
import pytest

import ingest
import lakehouse
from tests.containers.podman import ROOT, run

pytestmark = pytest.mark.containers

PACKAGES = (lakehouse, ingest, lakehouse_edge)

IMPORT_ALL = """
import importlib, json, pkgutil, sys
names, failed = [], {}
for package in ("lakehouse", "ingest", "lakehouse_edge"):
    root = importlib.import_module(package)
    names.append(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        if info.name.endswith(".__main__"):
            continue
        names.append(info.name)
        try:
            importlib.import_module(info.name)
        except Exception as exc:
            failed[info.name] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"modules": sorted(names), "failed": failed}))
"""

EVERY_HELP = """
import json, typer.main
from typer.testing import CliRunner
from lakehouse.cli import app
root = typer.main.get_command(app)
def walk(command, path):
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from walk(sub, [*path, name])
codes = {}
for path in walk(root, []):
    result = CliRunner().invoke(app, [*path, "--help"])
    codes[" ".join(path) or "lakehouse"] = result.exit_code
print(json.dumps(codes))
"""


def host_modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package.__name__)
        names += [
            info.name
            for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
            if not info.name.endswith(".__main__")
        ]
    return sorted(names)


def in_image(image: str, script: str) -> dict:
    result = run(image, ["-c", script], entrypoint="python")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_module_of_the_platform_imports_in_the_image(platform_image):
    found = in_image(platform_image, IMPORT_ALL)
    assert found["failed"] == {}
    assert found["modules"] == host_modules()


def test_every_command_answers_its_help_in_the_image(platform_image):
    codes = in_image(platform_image, EVERY_HELP)
    assert {"lakehouse", "gateway", "deploy bootstrap", "ingest kafka", "transform",
            "maintain", "audit serve", "reconcile", "demo"} <= set(codes)  # fmt: skip
    assert {command: code for command, code in codes.items() if code != 0} == {}


def test_the_image_runs_as_its_own_user_on_a_read_only_root(platform_image):
    probe = (
        "import os, json\n"
        "try:\n    open('/opt/lakehouse/probe', 'w')\n    written = True\n"
        "except OSError as exc:\n    written = exc.strerror\n"
        "print(json.dumps([os.getuid(), os.getgid(), written, os.environ['LAKEHOUSE_HOME']]))"
    )
    assert in_image(platform_image, probe) == [10001, 10001, "Read-only file system",
                                                "/var/lib/lakehouse"]  # fmt: skip


def canonical(requirement: str) -> str:
    name, version = requirement.split("==")
    return f"{re.sub(r'[-_.]+', '-', name).lower()}=={version}"


def locked(name: str) -> set[str]:
    lines = (ROOT / "compose" / name).read_text().splitlines()
    return {canonical(line) for line in lines if line and not line.startswith("#")}


def installed(image: str) -> set[str]:
    listing = (
        "import json, importlib.metadata as m; print(json.dumps(sorted("
        "f\"{d.metadata['Name']}=={d.version}\" for d in m.distributions())))"
    )
    return {canonical(r) for r in in_image(image, listing)}


def test_supersets_image_holds_exactly_its_locked_versions_and_its_drivers(superset_image):
    # setuptools comes with the base's venv; Superset's dependencies may use it.
    assert {r for r in installed(superset_image) if not r.startswith("setuptools==")} == locked(
        "superset-constraints.txt"
    )
    # The app factory, the drivers of both databases, the server and the health check.
    probe = (
        "import os, json, superset.app, psycopg2, trino.sqlalchemy, gunicorn, runpy; "
        "print(json.dumps([os.getuid(), os.environ['SUPERSET_HOME'], "
        "os.path.exists('/app/lakehouse/probe.py')]))"
    )
    assert in_image(superset_image, probe) == [1000, "/app/superset_home", True]


def test_the_image_holds_exactly_the_locked_versions(platform_image):
    ours = {"lakehouse==0.1.0", "lakehouse-edge==0.1.0"}
    assert installed(platform_image) == locked("constraints.txt") | ours
