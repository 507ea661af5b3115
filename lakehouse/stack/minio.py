"""MinIO built from source with `go install` (upstream publishes source only)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx

from lakehouse.errors import PrerequisiteError
from lakehouse.s3 import ROOT_KEY, encrypt_by_default, ensure_bucket, s3_client, s3_endpoint
from lakehouse.stack.artifacts import MINIO_MIN_GO, MINIO_MODULE, MINIO_PACKAGES, MINIO_VERSION
from lakehouse.stack.fetch import count_lines, require_tool, run_step
from lakehouse.stack.minio_access import ensure_service_keys
from lakehouse.stack.service import Service
from lakehouse.tls import verification

# The name MinIO gives its one encryption key (it shows in object metadata).
SSE_KEY_NAME = "lakehouse-sse"
_GO_VERSION = re.compile(r"go(\d+)\.(\d+)")


def go_version(go: str) -> tuple[int, int] | None:
    """(major, minor) of the Go toolchain at `go`, None if it cannot be told."""
    result = subprocess.run([go, "version"], capture_output=True, text=True, check=False)
    match = _GO_VERSION.search(result.stdout)
    return (int(match.group(1)), int(match.group(2))) if match else None


class Minio(Service):
    name = "minio"

    @property
    def ports(self) -> list[int]:
        return [self.settings.minio.port, self.settings.minio.console_port]

    @property
    def url(self) -> str:
        return s3_endpoint(self.settings)

    @property
    def console_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.minio.console_port}"

    @property
    def start_timeout(self) -> float:
        return self.settings.minio.start_timeout

    @property
    def binary(self) -> Path:
        return self.settings.cache_dir / "minio" / MINIO_VERSION / "minio"

    def obtain(self) -> None:
        if self.binary.exists():
            return
        fix = (
            f"install Go {MINIO_MIN_GO[0]}.{MINIO_MIN_GO[1]} or newer and put `go` on PATH "
            "(MinIO is built from source)"
        )
        go = require_tool("go", fix=fix)
        version = go_version(go)
        if version is None or version < MINIO_MIN_GO:
            raise PrerequisiteError(f"Go toolchain at {go} is too old ({version})", fix=fix)
        env = dict(os.environ, GOBIN=str(self.binary.parent), GOFLAGS="-buildvcs=false")
        build_log = self.settings.cache_dir / "logs" / "minio-build.log"
        build_log.unlink(missing_ok=True)
        # -x prints one "compile" line per package, which drives the progress bar; without
        # debug symbols (-s -w) the link takes 8 s instead of 20, the binary 112 MB, not 150.
        run_step(
            [go, "install", "-x", "-ldflags=-s -w", f"{MINIO_MODULE}@{MINIO_VERSION}"],
            description="building MinIO from source",
            log_file=build_log,
            console=self.ctx.console,
            env=env,
            measure=lambda: count_lines(build_log, "/compile -o "),
            total=MINIO_PACKAGES,
            unit="packages",
        )

    def configure(self) -> None:
        (self.state_dir / "data").mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        host = self.settings.host
        return [
            str(self.binary), "server", str(self.state_dir / "data"),
            "--address", f"{host}:{self.settings.minio.port}",
            "--console-address", f"{host}:{self.settings.minio.console_port}",
            "--quiet",
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        creds = self.ctx.credentials
        return {
            "MINIO_ROOT_USER": creds.minio_root_user,
            "MINIO_ROOT_PASSWORD": creds.minio_root_password,
            "MINIO_REGION": self.settings.minio.region,
            "MINIO_BROWSER_REDIRECT": "off",
            "MINIO_UPDATE": "off",
            # The key SSE-S3 (and MinIO's own backend data) is encrypted with.
            "MINIO_KMS_SECRET_KEY": f"{SSE_KEY_NAME}:{creds.minio_kms_key}",
        }

    @property
    def operators_store(self) -> bool:
        """A managed store whose keys (or workload identity) and bucket are the operator's:
        no MinIO health check or admin API to call there."""
        minio = self.settings.minio
        return minio.ambient_credentials or bool(minio.access_key_ids)

    def ready(self) -> bool:
        if self.operators_store:
            return True
        response = httpx.get(
            f"{self.url}/minio/health/ready",
            timeout=2,
            verify=verification(self.settings.minio.ca_file),
        )
        return response.status_code == 200

    def bootstrap(self) -> None:
        if self.operators_store:
            return
        client = s3_client(self.settings, self.ctx.credentials, ROOT_KEY)
        ensure_bucket(client, self.settings.minio.bucket)
        if self.settings.minio.encrypt and self.settings.security:
            encrypt_by_default(client, self.settings.minio.bucket)
        ensure_service_keys(self.settings, self.ctx.credentials)
