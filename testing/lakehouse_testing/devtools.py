"""Pinned tools that check the chart and the compose file, built from their Go modules.

Helm, the docker compose plugin, kube-apiserver and etcd publish binaries only on sites
this project does not depend on; the Go module proxy serves their source, checked against
the Go checksum database. Each is built once into `<cache>/tools` and reused, the way its
upstream release builds it where that changes behaviour (Helm 3's default Kubernetes
version, kube-apiserver's reported version), without symbol tables elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lakehouse.errors import FetchError, PrerequisiteError

HELM_MODULES = {3: ("helm.sh/helm/v3", "v3.22.1"), 4: ("helm.sh/helm/v4", "v4.3.2")}
COMPOSE_MODULE = "github.com/docker/compose/v2"
COMPOSE_VERSION = "v2.40.3"
KUBERNETES_MODULE = "k8s.io/kubernetes"
KUBERNETES_VERSION = "v1.33.13"
ETCD_MODULE = "go.etcd.io/etcd/server/v3"
ETCD_VERSION = "v3.6.17"
# kube-apiserver links for minutes on two cores, more beside other work.
BUILD_TIMEOUT = 3600
# Builds leave the CPU to whatever else runs (a stack, tests).
BUILD_NICENESS = 10
# Release binaries carry no symbol tables, and linking without them is much faster.
STRIPPED = "-s -w"


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
    nice = ["nice", "-n", str(BUILD_NICENESS)] if shutil.which("nice") else []
    result = subprocess.run(
        [*nice, *command], cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
        check=False, env={**os.environ, "GOFLAGS": "-buildvcs=false", "CGO_ENABLED": "0", **env},
    )  # fmt: skip
    if result.returncode != 0:
        raise FetchError(f"{' '.join(command[:3])} failed: {result.stderr[-2000:]}")
    return result.stdout


def _download(module: str, version: str) -> dict[str, Any]:
    """`go mod download -json` of one module version: where its source and go.mod are."""
    found: dict[str, Any] = json.loads(
        _run([_go(), "mod", "download", "-json", f"{module}@{version}"])
    )
    return found


def _build_once(binary: Path, build: Callable[[Path], Path]) -> Path:
    """`binary`, made by `build(staging directory)` unless it exists; a build that fails
    or is interrupted leaves nothing behind."""
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=binary.parent) as staging:
        build(Path(staging)).rename(binary)
    return binary


def _writable_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    for path in target.rglob("*"):  # the module cache is read-only
        path.chmod(path.stat().st_mode | 0o200)
    target.chmod(target.stat().st_mode | 0o200)
    return target


def helm_version(major: int) -> str:
    """The pinned version of Helm `major` (3 or 4)."""
    return HELM_MODULES[major][1]


def helm(cache_dir: Path, major: int = 4) -> Path:
    """The helm binary of Helm `major` (3 or 4), built with `go install` on first use."""
    module, version = HELM_MODULES[major]

    def build(staging: Path) -> Path:
        flags = [
            STRIPPED,
            f"-X {module}/internal/version.version={version}",
            f"-X {module}/internal/version.metadata=",
            f"-X {module}/internal/version.gitTreeState=clean",
        ]
        if major == 3:
            flags += _helm3_kubernetes_flags(module, version)
        ldflags = " ".join(flags)
        command = [_go(), "install", "-trimpath", f"-ldflags={ldflags}"]
        _run([*command, f"{module}/cmd/helm@{version}"], GOBIN=str(staging))
        return staging / "helm"

    return _build_once(cache_dir / "tools" / f"helm-{version}" / "helm", build)


def _helm3_kubernetes_flags(module: str, version: str) -> list[str]:
    """The Kubernetes version Helm 3's release binaries report with no cluster at hand.

    Helm 3 takes it from link-time variables that its Makefile computes from the
    k8s.io/client-go it requires (v0.X.Y: Kubernetes 1.X); a plain `go install` leaves
    the in-source default, 1.20, which refuses charts that require a recent Kubernetes.
    Helm 4 reads client-go's version from the binary's build information instead."""
    go_mod = Path(_download(module, version)["GoMod"]).read_text()
    found = re.search(r"^\s*k8s\.io/client-go v(\d+)\.(\d+)\.", go_mod, re.MULTILINE)
    if found is None:
        raise FetchError(f"{module}@{version}'s go.mod requires no k8s.io/client-go")
    major, minor = int(found.group(1)) + 1, found.group(2)
    return [
        f"-X {module}/{package}.k8sVersion{part}={value}"
        for package in ("pkg/lint/rules", "pkg/chartutil")
        for part, value in (("Major", major), ("Minor", minor))
    ]


def docker_config_with_compose(cache_dir: Path) -> Path:
    """A DOCKER_CONFIG directory whose cli-plugins hold docker compose COMPOSE_VERSION.

    `go install` refuses the module (its go.mod has exclude directives), so its source is
    downloaded through the module proxy and built in a copy."""
    config = cache_dir / "tools" / f"docker-compose-{COMPOSE_VERSION}"

    def build(staging: Path) -> Path:
        source = Path(_download(COMPOSE_MODULE, COMPOSE_VERSION)["Dir"])
        copy = _writable_copy(source, staging / "src")
        _run([_go(), "build", "-o", str(staging / "docker-compose"), "./cmd"], cwd=copy)
        return staging / "docker-compose"

    _build_once(config / "cli-plugins" / "docker-compose", build)
    return config


def _build_without_local_replacements(
    module: str, version: str, package: str, name: str, staging: Path, ldflags: str,
    siblings_at: str | None = None,
) -> Path:  # fmt: skip
    """Build `package` (the binary `name`) of a module whose go.mod replaces its sibling
    modules with directories of its repository, which its module zip lacks (and `go
    install` refuses).

    The copy's go.mod takes the siblings from the module proxy instead: at the versions it
    requires, or at `siblings_at` where it requires a placeholder v0.0.0."""
    go = _go()
    copy = _writable_copy(Path(_download(module, version)["Dir"]), staging / "src")
    edits: list[str] = []
    mod = json.loads(_run([go, "mod", "edit", "-json"], cwd=copy))
    required = {r["Path"]: r["Version"] for r in mod.get("Require") or []}
    for replace in mod.get("Replace") or []:
        old, new = replace["Old"]["Path"], replace["New"]["Path"]
        if not new.startswith(("./", "../")):
            continue
        edits.append(f"-dropreplace={old}")
        if siblings_at and required.get(old) == "v0.0.0":
            edits.append(f"-require={old}@{siblings_at}")
    _run([go, "mod", "edit", *edits], cwd=copy)
    binary = staging / name
    # GOWORK=off: a go.work beside go.mod names the same missing directories.
    _run(
        [go, "build", "-trimpath", f"-ldflags={ldflags}", "-o", str(binary), package],
        cwd=copy, GOWORK="off", GOFLAGS="-buildvcs=false -mod=mod",
    )  # fmt: skip
    return binary


def kube_apiserver(cache_dir: Path) -> Path:
    """kube-apiserver of KUBERNETES_VERSION, for server-side dry runs of the chart.

    It reports its version as Kubernetes' own release build does (link-time variables):
    Helm checks a chart's kubeVersion against it, and the in-source default is v0.0.0."""
    _, minor, patch = KUBERNETES_VERSION.lstrip("v").split(".")
    variables = {
        "gitVersion": KUBERNETES_VERSION,
        "gitMajor": "1",
        "gitMinor": minor,
        "gitTreeState": "clean",
    }
    ldflags = " ".join(
        [STRIPPED]
        + [
            f"-X {package}.{key}={value}"
            for package in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version")
            for key, value in variables.items()
        ]
    )

    def build(staging: Path) -> Path:
        return _build_without_local_replacements(
            KUBERNETES_MODULE, KUBERNETES_VERSION, "./cmd/kube-apiserver", "kube-apiserver",
            staging, ldflags,
            siblings_at=f"v0.{minor}.{patch}",
        )  # fmt: skip

    return _build_once(
        cache_dir / "tools" / f"kubernetes-{KUBERNETES_VERSION}" / "kube-apiserver", build
    )


def etcd(cache_dir: Path) -> Path:
    """etcd of ETCD_VERSION, the store behind kube-apiserver."""

    def build(staging: Path) -> Path:
        return _build_without_local_replacements(
            ETCD_MODULE, ETCD_VERSION, ".", "etcd", staging, STRIPPED
        )

    return _build_once(cache_dir / "tools" / f"etcd-{ETCD_VERSION}" / "etcd", build)
