"""Podman for the tests: real containers on a machine without a Docker engine.

Registry images cannot be pulled here, so the Dockerfiles' Python base is made locally:
a Debian bookworm root file system with Python 3.11 (mmdebstrap, about 20 s, kept in the
cache) imported as BASE_IMAGE. Podman reads `containers.conf` beside this file
(`CONTAINERS_CONF`): runc with cgroupfs and no default ulimits, which these machines
need; the system's own configuration is left as it is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

CONF = Path(__file__).with_name("containers.conf")
BASE_IMAGE = "localhost/python:3.11-bookworm"
BASE_PACKAGES = "python3,python3-venv,python-is-python3,ca-certificates"
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
ROOT = Path(__file__).resolve().parents[2]


class PodmanError(RuntimeError):
    """A podman command failed; the message carries its output."""


def environment() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONF)}


def podman(
    *args: str, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("podman")
    if binary is None:
        raise PodmanError("podman is missing: `make containers` installs it")
    result = subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=timeout, check=False,
        env=environment(),
    )  # fmt: skip
    if check and result.returncode != 0:
        raise PodmanError(f"podman {' '.join(args[:3])} … exited {result.returncode}:\n"
                          f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")  # fmt: skip
    return result


def give_to_image_user(*paths: Path, uid: int = 10001) -> None:
    """Make `paths` the image user's, as a Kubernetes Secret's fsGroup or a compose volume
    does (rootless podman maps that user into the caller's subordinate ids)."""
    for path in paths:
        if os.geteuid() == 0:
            os.chown(path, uid, uid)
        else:
            podman("unshare", "chown", f"{uid}:{uid}", str(path))


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def ensure_base_image(cache_dir: Path) -> str:
    """BASE_IMAGE, made from a cached mmdebstrap tarball when podman lacks it."""
    if image_exists(BASE_IMAGE):
        return BASE_IMAGE
    tarball = cache_dir / "images" / "debian-bookworm-python3.tar"
    if not tarball.exists():
        tarball.parent.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial")
        command = ["mmdebstrap", "--variant=apt", f"--include={BASE_PACKAGES}", "bookworm",
                   str(partial)]  # fmt: skip
        sources = DEBIAN_SOURCES.read_text() if DEBIAN_SOURCES.exists() else None
        if sources is not None:
            command.append("-")
        result = subprocess.run(
            command, input=sources, capture_output=True, text=True, timeout=900, check=False
        )
        if result.returncode != 0:
            raise PodmanError(f"mmdebstrap failed: {result.stderr[-3000:]}")
        partial.rename(tarball)
    podman("import", str(tarball), BASE_IMAGE)
    return BASE_IMAGE


def build(tag: str, dockerfile: str, *, context: Path = ROOT, timeout: float = 1800) -> float:
    """Build `tag` from `dockerfile` (relative to the context) on BASE_IMAGE; seconds taken.

    Downloads during the build trust the machine's CA bundle, as pip on the host does."""
    trust: list[str] = []
    if CA_BUNDLE.exists():
        trust = ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro", "--env", f"PIP_CERT={CA_BUNDLE}"]
    started = time.monotonic()
    podman(
        "build", "--network", "host", *trust, "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}",
        "-f", str(context / dockerfile), "-t", tag, str(context), timeout=timeout,
    )  # fmt: skip
    return time.monotonic() - started


def run_args(
    image: str,
    args: Iterable[str],
    *,
    env: Mapping[str, str] = {},
    mounts: Iterable[tuple[Path, str]] = (),
    writable: Iterable[tuple[Path, str]] = (),
    scratch: Iterable[str] = (),
    name: str | None = None,
    detach: bool = False,
    entrypoint: str | None = None,
) -> list[str]:
    """`podman run` arguments as the chart and compose run our services: the image's own
    non-root user, a read-only root file system, no capabilities, no new privileges, on
    the host's network (the test stack listens on loopback)."""
    command = ["run", "--network", "host", "--read-only", "--cap-drop", "ALL",
               "--security-opt", "no-new-privileges"]  # fmt: skip
    command += ["--name", name or f"lakehouse-test-{uuid.uuid4().hex[:8]}"]
    command += ["--detach"] if detach else ["--rm"]
    if entrypoint is not None:
        command += ["--entrypoint", entrypoint]
    # A volume of the container's own, as compose gives the home: it takes its owner
    # from the image (a tmpfs under podman would be root's).
    for path in scratch:
        command += ["-v", path]
    for source, target in mounts:
        command += ["-v", f"{source}:{target}:ro"]
    for source, target in writable:
        command += ["-v", f"{source}:{target}"]
    for key, value in env.items():
        command += ["--env", f"{key}={value}"]
    return [*command, image, *args]


def run(image: str, args: Iterable[str], *, timeout: float = 900, **options: Any
        ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run a command in a new container to its end; its output, whatever its exit code."""
    return podman(*run_args(image, args, **options), timeout=timeout, check=False)


class Container:
    """A long-running container (`podman run --detach`), removed by `remove()`."""

    def __init__(self, image: str, args: Iterable[str], **options: Any) -> None:
        self.name = f"lakehouse-test-{uuid.uuid4().hex[:8]}"
        podman(*run_args(image, args, name=self.name, detach=True, **options))

    def running(self) -> bool:
        result = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return result.stdout.strip() == "true"

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def stop(self, timeout: int = 30) -> int:
        """SIGTERM, then the exit code once it has ended."""
        podman("stop", "--time", str(timeout), self.name, check=False, timeout=timeout + 30)
        code = podman("inspect", "--format", "{{.State.ExitCode}}", self.name, check=False)
        return int(code.stdout.strip() or -1)

    def remove(self) -> None:
        podman("rm", "--force", "--volumes", self.name, check=False)
