"""Trino 476 single node, its JVM started directly (not through bin/launcher)."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import httpx
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

from lakehouse.clients import iceberg_rest_url, trino_connection
from lakehouse.config import Settings
from lakehouse.errors import FetchError
from lakehouse.s3 import s3_endpoint
from lakehouse.stack.artifacts import TRINO_SERVER
from lakehouse.stack.service import Service

# Plugins kept from the distribution; the postgresql connector needs geospatial's types.
TRINO_PLUGINS = ("iceberg", "postgresql", "geospatial", "tpch")

# Trino's recommended JVM flags for 476 (heap set from settings).
_JVM_FLAGS = (
    "-server",
    "-XX:G1HeapRegionSize=32M",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:ReservedCodeCacheSize=256M",
    "-XX:PerMethodRecompilationCutoff=10000",
    "-XX:PerBytecodeRecompilationCutoff=10000",
    "-Djdk.attach.allowAttachSelf=true",
    "-Djdk.nio.maxCachedBufferSize=2000000",
    "-XX:+EnableDynamicAgentLoading",
    "-XX:+UnlockDiagnosticVMOptions",
    "-XX:G1NumCollectionsKeepPinned=10000000",
    "--add-modules=jdk.incubator.vector",
    "--enable-native-access=ALL-UNNAMED",
)


class Trino(Service):
    name = "trino"

    @property
    def ports(self) -> list[int]:
        return [self.settings.trino.port]

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.trino.port}"

    @property
    def start_timeout(self) -> float:
        return self.settings.trino.start_timeout

    @property
    def install_dir(self) -> Path:
        return self.settings.cache_dir / "trino" / TRINO_SERVER.version

    @property
    def etc_dir(self) -> Path:
        return self.state_dir / "etc"

    def obtain(self) -> None:
        if (self.install_dir / "lib").is_dir():
            return
        archive = self.ctx.maven.artifact(TRINO_SERVER)
        staging = self.install_dir.with_name(f"{self.install_dir.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        _extract(archive, staging, self.ctx.console.is_terminal)
        if not (staging / "lib").is_dir():
            raise FetchError(f"{archive} holds no lib/ directory")
        staging.rename(self.install_dir)

    def configure(self) -> None:
        s = self.settings
        catalogs = self.etc_dir / "catalog"
        catalogs.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "data").mkdir(exist_ok=True)
        heap_mb = _megabytes(s.trino.heap)
        (self.state_dir / "spill").mkdir(exist_ok=True)
        _write_properties(
            self.etc_dir / "config.properties",
            {
                "coordinator": "true",
                "node-scheduler.include-coordinator": "true",
                "http-server.http.port": str(s.trino.port),
                "node.bind-ip": s.host,
                "node.internal-address": s.host,
                "discovery.uri": self.url,
                "query.max-memory": f"{max(heap_mb * 7 // 10, 256)}MB",
                "query.max-memory-per-node": f"{max(heap_mb * 7 // 10, 256)}MB",
                "memory.heap-headroom-per-node": f"{max(heap_mb // 4, 128)}MB",
                # Full refreshes sort and window whole tables. Spilling starts before a
                # query reaches its limit (the threshold is a share of the memory pool).
                "spill-enabled": "true",
                "memory-revoking-threshold": "0.7",
                "memory-revoking-target": "0.5",
                "spiller-spill-path": str(self.state_dir / "spill"),
                "plugin.dir": str(self.install_dir / "plugin"),
                # Transform runs add a catalog per Nessie branch with CREATE CATALOG.
                "catalog.management": "dynamic",
                "catalog.store": "file",
                "http-server.log.path": str(self.state_dir / "data" / "http-request.log"),
            },
        )
        # The file store's own settings; Trino reads this path relative to its cwd.
        _write_properties(
            self.etc_dir / "catalog-store.properties", {"catalog.config-dir": str(catalogs)}
        )
        (self.etc_dir / "log.properties").write_text("io.trino=INFO\n")
        _write_properties(catalogs / "lake.properties", lake_catalog_properties(s))
        _write_properties(
            catalogs / "pg.properties",
            {
                "connector.name": "postgresql",
                "connection-url": f"jdbc:postgresql://{s.host}:{s.postgres.port}/lakehouse",
                "connection-user": "lakehouse",
                "connection-password": "${ENV:LAKEHOUSE_PG_PASSWORD}",
            },
        )

    def command(self) -> list[str]:
        heap = self.settings.trino.heap
        return [
            str(self.ctx.java()),
            "-cp", f"{self.install_dir / 'lib'}/*",
            f"-Xmx{heap}", f"-Xms{heap}",
            *_JVM_FLAGS,
            "-Dnode.environment=lakehouse",
            "-Dnode.id=lakehouse-1",
            f"-Dnode.data-dir={self.state_dir / 'data'}",
            f"-Dlog.levels-file={self.etc_dir / 'log.properties'}",
            f"-Dconfig={self.etc_dir / 'config.properties'}",
            "io.trino.server.TrinoServer",
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        creds = self.ctx.credentials
        return {
            "LAKEHOUSE_S3_ACCESS_KEY": creds.minio_root_user,
            "LAKEHOUSE_S3_SECRET_KEY": creds.minio_root_password,
            "LAKEHOUSE_PG_PASSWORD": creds.database_passwords["lakehouse"],
        }

    def ready(self) -> bool:
        info = httpx.get(f"{self.url}/v1/info", timeout=3)
        if info.status_code != 200 or info.json().get("starting", True):
            return False
        # The node registers itself a moment after start-up ends and queries fail with
        # NO_NODES_AVAILABLE until then, so only a query that runs proves readiness.
        cursor = trino_connection(self.settings, catalog="system", request_timeout=5).cursor()
        cursor.execute("select count(*) from system.runtime.nodes where state = 'active'")
        rows = cursor.fetchall()
        return bool(rows and rows[0][0] >= 1)


def lake_catalog_properties(settings: Settings, ref: str = "main") -> dict[str, str]:
    """Iceberg catalog properties for one Nessie branch through its REST endpoint.

    S3 secrets stay `${ENV:…}` references resolved inside the Trino process, so they
    appear neither in catalog files nor in a CREATE CATALOG statement.
    """
    return {
        "connector.name": "iceberg",
        "iceberg.catalog.type": "rest",
        "iceberg.rest-catalog.uri": iceberg_rest_url(settings, ref),
        "iceberg.rest-catalog.security": "NONE",
        "iceberg.rest-catalog.vended-credentials-enabled": "false",
        "fs.native-s3.enabled": "true",
        "s3.endpoint": s3_endpoint(settings),
        "s3.region": settings.minio.region,
        "s3.path-style-access": "true",
        "s3.aws-access-key": "${ENV:LAKEHOUSE_S3_ACCESS_KEY}",
        "s3.aws-secret-key": "${ENV:LAKEHOUSE_S3_SECRET_KEY}",
    }


def _megabytes(heap: str) -> int:
    number, unit = int(heap[:-1]), heap[-1].upper()
    return number * 1024 if unit == "G" else number


def _write_properties(path: Path, values: dict[str, str]) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))


def _extract(archive: Path, dest: Path, show_progress: bool) -> None:
    """Unpack lib/ and the kept plugins, dropping the top-level version directory.

    Plugins hard-link jars of other plugins, so every plugin is unpacked first and the
    unwanted ones are deleted afterwards (the links keep the shared files).
    """
    size = archive.stat().st_size
    with (
        archive.open("rb") as raw,
        tarfile.open(fileobj=raw, mode="r|gz") as tar,
        Progress(
            TextColumn("unpacking Trino"),
            BarColumn(),
            DownloadColumn(),
            disable=not show_progress,
            transient=True,
        ) as bar,
    ):
        task = bar.add_task("unpack", total=size)
        for member in tar:
            _, _, relative = member.name.partition("/")
            if relative.startswith(("lib/", "plugin/")):
                member.name = relative
                if member.islnk():
                    member.linkname = member.linkname.partition("/")[2]
                tar.extract(member, dest, filter="data")
            bar.update(task, completed=raw.tell())
    for plugin in (dest / "plugin").iterdir():
        if plugin.name not in TRINO_PLUGINS:
            shutil.rmtree(plugin)
