"""Nessie: JDBC version store on PostgreSQL, Iceberg REST at /iceberg over an S3 warehouse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from lakehouse.catalog_tokens import ISSUER, public_key
from lakehouse.clients import nessie_token
from lakehouse.errors import StackError
from lakehouse.s3 import s3_endpoint
from lakehouse.stack.artifacts import NESSIE_SERVER
from lakehouse.stack.java import min_heap
from lakehouse.stack.service import Service
from lakehouse.tls import verification

LAKE_SETUP_TIMEOUT = 120

_PROPERTIES = """# Written by `lakehouse stack up`; edit the settings, not this file.
quarkus.http.host={host}
quarkus.http.port={port}
quarkus.management.host={host}
quarkus.management.port={management_port}
quarkus.log.console.format=%d{{HH:mm:ss.SSS}} %-5p [%c{{2.}}] %s%e%n

nessie.version.store.type=JDBC2
nessie.version.store.persist.jdbc.datasource=postgresql
nessie.version.store.persist.cache-capacity-mb=64
quarkus.datasource.postgresql.jdbc.url=jdbc:postgresql://{host}:{pg_port}/nessie
quarkus.datasource.postgresql.username=nessie
quarkus.datasource.postgresql.password=${{NESSIE_DB_PASSWORD}}
# A PostgreSQL restart leaves pooled connections dead: each is checked as it is taken,
# and idle ones every 10 s, so commits work again as soon as the database is back.
quarkus.datasource.postgresql.jdbc.validate-on-borrow=true
quarkus.datasource.postgresql.jdbc.background-validation-interval=10S

nessie.catalog.default-warehouse={warehouse}
nessie.catalog.warehouses.{warehouse}.location=s3://{bucket}/{warehouse}
nessie.catalog.service.s3.default-options.endpoint={s3_endpoint}
nessie.catalog.service.s3.default-options.path-style-access=true
nessie.catalog.service.s3.default-options.region={region}
nessie.catalog.service.s3.default-options.auth-type=STATIC
nessie.catalog.service.s3.default-options.access-key=urn:nessie-secret:quarkus:lakehouse.s3
# Clients bring their own keys; no remote request signing through Nessie.
nessie.catalog.service.s3.default-options.request-signing-enabled=false
nessie.catalog.validate-secrets=true
lakehouse.s3.name=${{LAKEHOUSE_S3_ACCESS_KEY}}
lakehouse.s3.secret=${{LAKEHOUSE_S3_SECRET_KEY}}

# Every request but health (on the management port) carries a bearer token the platform
# signed (lakehouse.catalog_tokens); checked here against the public key, no OIDC server.
nessie.server.authentication.enabled={authentication}
quarkus.oidc.public-key={public_key}
quarkus.oidc.token.issuer={issuer}
"""


class Nessie(Service):
    name = "nessie"
    depends_on = ("postgres",)

    @property
    def ports(self) -> list[int]:
        return [self.settings.nessie.port, self.settings.nessie.management_port]

    @property
    def url(self) -> str:
        return self.settings.nessie_url()

    @property
    def start_timeout(self) -> float:
        return self.settings.nessie.start_timeout

    @property
    def jar(self) -> Path:
        return NESSIE_SERVER.local_path(self.ctx.maven.repository)

    def obtain(self) -> None:
        self.ctx.maven.artifact(NESSIE_SERVER)

    def configure(self) -> None:
        s = self.settings
        config_dir = self.state_dir / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "tmp").mkdir(exist_ok=True)
        (config_dir / "application.properties").write_text(
            _PROPERTIES.format(
                host=s.host,
                port=s.nessie.port,
                management_port=s.nessie.management_port,
                pg_port=s.postgres.port,
                warehouse=s.nessie.warehouse,
                bucket=s.minio.bucket,
                s3_endpoint=s3_endpoint(s),
                region=s.minio.region,
                authentication=str(s.security).lower(),
                public_key=public_key(self.ctx.credentials.nessie_signing_key),
                issuer=ISSUER,
            )
        )

    def command(self) -> list[str]:
        heap = self.settings.nessie.heap
        tmp = self.state_dir / "tmp"
        return [
            str(self.ctx.java()), f"-Xms{min_heap(heap)}", f"-Xmx{heap}",
            f"-Djava.io.tmpdir={tmp}", f"-Dvertx.cacheDirBase={tmp}",
            "-jar", str(self.jar),
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        creds = self.ctx.credentials
        return {
            "NESSIE_DB_PASSWORD": creds.database_passwords["nessie"],
            "LAKEHOUSE_S3_ACCESS_KEY": "nessie",
            "LAKEHOUSE_S3_SECRET_KEY": creds.minio_keys["nessie"],
        }

    def ready(self) -> bool:
        s = self.settings
        health = httpx.get(
            f"http://{s.server_host('nessie')}:{s.nessie.management_port}/q/health/ready",
            timeout=3,
        )
        return health.status_code == 200

    def bootstrap(self) -> None:
        """Check the warehouse answers; create the medallion namespaces and bronze tables."""
        config = httpx.get(
            f"{self.url}/iceberg/v1/config",
            params={"warehouse": self.settings.nessie.warehouse},
            headers={"Authorization": f"Bearer {nessie_token(self.ctx.credentials)}"},
            timeout=10,
            verify=verification(self.settings.nessie.ca_file),
        )
        if config.status_code != 200:
            raise StackError(
                f"Nessie's Iceberg REST endpoint answered {config.status_code}: "
                f"{config.text[:300]}",
                fix="see `lakehouse stack logs nessie`",
            )
        # In a process of its own (see lakehouse.stack.lake_setup), with this one's
        # settings: they come from the environment it passes on.
        try:
            result = subprocess.run(
                [sys.executable, "-m", "lakehouse.stack.lake_setup"],
                capture_output=True, text=True, timeout=LAKE_SETUP_TIMEOUT, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise StackError(
                f"creating the lake's namespaces and tables took over {LAKE_SETUP_TIMEOUT} s",
                fix="see `lakehouse stack logs nessie`",
            ) from exc
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise StackError(
                "creating the lake's namespaces and tables failed: "
                + (lines[-1] if lines else f"exit {result.returncode}"),
                fix="see `lakehouse stack logs nessie`",
            )
