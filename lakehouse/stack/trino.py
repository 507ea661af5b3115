"""Trino 476 single node, its JVM started directly (not through bin/launcher)."""

from __future__ import annotations

import os
import shutil
import ssl
import tarfile
from pathlib import Path

import httpx
from rich.console import Console

from lakehouse.branch_catalogs import lake_catalog_properties
from lakehouse.clients import nessie_token, trino_connection
from lakehouse.config import Settings
from lakehouse.credentials import READER_ROLE, Credentials
from lakehouse.errors import FetchError
from lakehouse.private_files import write_private
from lakehouse.stack.artifacts import TRINO_SERVER
from lakehouse.stack.fetch import progress_bar
from lakehouse.stack.service import Service
from lakehouse.stack.users import ensure_os_user, service_user
from lakehouse.tls import ca_path, server_certificate
from lakehouse.trino_access import write_files
from lakehouse.trino_users import principals

# Plugins kept from the distribution; the postgresql connector needs geospatial's types.
TRINO_PLUGINS = (
    "iceberg", "postgresql", "geospatial", "tpch", "password-authenticators",
    "http-event-listener",
)  # fmt: skip

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
        scheme = "https" if self.settings.security else "http"
        return f"{scheme}://{self.settings.server_host('trino')}:{self.settings.trino.port}"

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
        plugins = self.install_dir / "plugin"
        if (self.install_dir / "lib").is_dir() and all(
            (plugins / name).is_dir() for name in TRINO_PLUGINS
        ):
            return
        archive = self.ctx.maven.artifact(TRINO_SERVER)
        # Unpacked again when a newer version of this code keeps more plugins.
        shutil.rmtree(self.install_dir, ignore_errors=True)
        staging = self.install_dir.with_name(f"{self.install_dir.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        _extract(archive, staging, self.ctx.console)
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
                **self._transport_security(),
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
                # Trino rotates its request log itself; keep it bounded.
                "http-server.log.max-size": "20MB",
                "http-server.log.max-history": "3",
                # A finished task's details are kept for the coordinator's final look only:
                # Trino sweeps every kept task every few seconds, which under a steady
                # stream of small queries (a transform run's tests) costs more CPU than
                # the queries themselves.
                "task.info.max-age": "1m",
                # A finished query's details (plan, statistics) stay in the coordinator's
                # heap for this long; the platform runs hundreds of queries a minute, and
                # at the default of 15 minutes they filled the heap within half an hour.
                "query.min-expire-age": "1m",
                **self._event_listener(),
            },
        )
        # The file store's own settings; Trino reads this path relative to its cwd.
        _write_properties(
            self.etc_dir / "catalog-store.properties", {"catalog.config-dir": str(catalogs)}
        )
        (self.etc_dir / "log.properties").write_text("io.trino=INFO\n")
        self._write_security()
        _write_properties(catalogs / "lake.properties", lake_catalog_properties(s))
        _write_properties(
            catalogs / "pg.properties",
            {
                "connector.name": "postgresql",
                "connection-url": f"jdbc:postgresql://{s.host}:{s.postgres.port}/lakehouse",
                # Read-only: Trino users must never reach tokens or receipts.
                "connection-user": READER_ROLE,
                "connection-password": "${ENV:LAKEHOUSE_PG_PASSWORD}",
                # Whole-table figures a row filter does not touch (lakehouse.trino_access).
                "statistics.enabled": "false",
            },
        )

    def _transport_security(self) -> dict[str, str]:
        """HTTPS only, with a certificate from the stack's CA; users authenticate with
        passwords, nodes with the shared secret. Plain HTTP with security off."""
        if not self.settings.security:
            return {"http-server.http.port": str(self.settings.trino.port)}
        return {
            "http-server.http.enabled": "false",
            "http-server.https.enabled": "true",
            "http-server.https.port": str(self.settings.trino.port),
            "http-server.https.keystore.path": str(self._certificate()),
            "http-server.authentication.type": "PASSWORD",
            "internal-communication.shared-secret": "${ENV:LAKEHOUSE_TRINO_SHARED_SECRET}",
            "internal-communication.https.required": "true",
            "internal-communication.https.truststore.path": str(ca_path(self.settings.home)),
        }

    def _event_listener(self) -> dict[str, str]:
        """Every completed query is posted to the audit receiver (lakehouse.audit_receiver)."""
        listener = self.etc_dir / "http-event-listener.properties"
        if not (self.settings.audit.trino_queries and self.settings.security):
            listener.unlink(missing_ok=True)
            return {}
        token = self.ctx.credentials.audit_token
        # 0600: it holds the receiver's token.
        write_private(listener, "".join(f"{k}={v}\n" for k, v in {
            "event-listener.name": "http",
            "http-event-listener.log-completed": "true",
            "http-event-listener.log-created": "false",
            "http-event-listener.log-split": "false",
            "http-event-listener.connect-ingest-uri":
                f"http://{self.settings.host}:{self.settings.audit.port}/trino/events",
            "http-event-listener.connect-http-headers": f"Authorization:Bearer {token}",
            # Rides out a receiver restart (it starts after Trino, with the services).
            "http-event-listener.connect-retry-count": "8",
            "http-event-listener.connect-retry-delay": "1s",
            "http-event-listener.connect-backoff-base": "2",
            "http-event-listener.connect-max-delay": "60s",
        }.items()))  # fmt: skip
        return {"event-listener.config-files": str(listener)}

    def _certificate(self) -> Path:
        hosts = sorted({self.settings.host, "127.0.0.1", "localhost"})
        return server_certificate(self.settings.home, self.etc_dir / "tls.pem", "trino", hosts)

    def _write_security(self) -> None:
        """Password file, groups and access rules (re-read by Trino every 5 s)."""
        etc = self.etc_dir
        if not self.settings.security:
            for name in ("password-authenticator", "group-provider", "access-control"):
                (etc / f"{name}.properties").unlink(missing_ok=True)
            return
        apply_security(self.settings, self.ctx.credentials)
        _write_properties(etc / "password-authenticator.properties", {
            "password-authenticator.name": "file",
            "file.password-file": str(etc / "password.db"),
            "file.refresh-period": "5s",
        })  # fmt: skip
        _write_properties(etc / "group-provider.properties", {
            "group-provider.name": "file",
            "file.group-file": str(etc / "group.txt"),
            "file.refresh-period": "5s",
        })  # fmt: skip
        _write_properties(etc / "access-control.properties", {
            "access-control.name": "file",
            "security.config-file": str(etc / "rules.json"),
            "security.refresh-period": "5s",
        })  # fmt: skip

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
            "LAKEHOUSE_S3_ACCESS_KEY": "trino",
            "LAKEHOUSE_S3_SECRET_KEY": creds.minio_keys["trino"],
            "LAKEHOUSE_PG_PASSWORD": creds.database_passwords[READER_ROLE],
            "LAKEHOUSE_TRINO_SHARED_SECRET": creds.trino_shared_secret,
            "LAKEHOUSE_NESSIE_TOKEN": nessie_token(creds, "trino"),
        }

    def _trust(self) -> ssl.SSLContext | bool:
        if not self.settings.security:
            return False  # plain HTTP: there is no certificate to verify
        return ssl.create_default_context(cafile=str(ca_path(self.settings.home)))

    def alive(self) -> bool:
        # Under a heavy query a test query can take longer than a health check may;
        # the server answering /v1/info is what matters for restarting it.
        return httpx.get(f"{self.url}/v1/info", timeout=5, verify=self._trust()).status_code == 200

    def ready(self) -> bool:
        info = httpx.get(f"{self.url}/v1/info", timeout=3, verify=self._trust())
        if info.status_code != 200 or info.json().get("starting", True):
            return False
        # The node registers itself a moment after start-up ends and queries fail with
        # NO_NODES_AVAILABLE until then, so only a query that runs proves readiness.
        cursor = trino_connection(
            self.settings, catalog="system", credentials=self.ctx.credentials, request_timeout=5
        ).cursor()
        cursor.execute("select count(*) from system.runtime.nodes where state = 'active'")
        rows = cursor.fetchall()
        return bool(rows and rows[0][0] >= 1)


def apply_security(settings: Settings, credentials: Credentials) -> None:
    """(Re)write Trino's password, group and rules files; a running Trino reloads them."""
    etc = settings.home / Trino.name / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    written = write_files(etc, principals(settings, credentials))
    user = service_user(settings)
    if user is not None:
        owner = ensure_os_user(user)
        for path in written:
            os.chown(path, owner.pw_uid, owner.pw_gid)


def _megabytes(heap: str) -> int:
    number, unit = int(heap[:-1]), heap[-1].upper()
    return number * 1024 if unit == "G" else number


def _write_properties(path: Path, values: dict[str, str]) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))


def _extract(archive: Path, dest: Path, console: Console) -> None:
    """Unpack lib/ and the kept plugins, dropping the top-level version directory.

    Plugins hard-link jars of other plugins, so every plugin is unpacked first and the
    unwanted ones are deleted afterwards (the links keep the shared files).
    """
    size = archive.stat().st_size
    with (
        archive.open("rb") as raw,
        tarfile.open(fileobj=raw, mode="r|gz") as tar,
        progress_bar(console, "unpacking Trino", size) as update,
    ):
        for member in tar:
            _, _, relative = member.name.partition("/")
            if relative.startswith(("lib/", "plugin/")):
                member.name = relative
                if member.islnk():
                    member.linkname = member.linkname.partition("/")[2]
                _extract_member(tar, member, dest)
            update(raw.tell())
    for plugin in (dest / "plugin").iterdir():
        if plugin.name not in TRINO_PLUGINS:
            shutil.rmtree(plugin)


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    """Extract with the "data" filter where this Python has it (3.11.4+), else check the
    one thing it would: nothing may land outside `dest`."""
    if hasattr(tarfile, "data_filter"):
        tar.extract(member, dest, filter="data")
        return
    target = (dest / member.name).resolve()
    if not target.is_relative_to(dest.resolve()) or member.issym() or member.isdev():
        raise FetchError(f"refusing archive member {member.name!r}")
    tar.extract(member, dest)
