"""Settings, one pydantic-settings class per service, all under the `LAKEHOUSE_` prefix.

`Settings()` is built once in `main()` (or a test fixture) and passed down; nothing
reads the environment at import time. Example: `LAKEHOUSE_TRINO_PORT=18080` moves
Trino, `LAKEHOUSE_HOME=/srv/lakehouse` moves all state.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lakehouse.errors import ConfigError


def _default_home() -> Path:
    return Path.cwd() / ".lakehouse"


def _default_cache() -> Path:
    # Started as root, the services run as an unprivileged user who cannot enter /root.
    if os.geteuid() == 0:
        return Path("/var/cache/lakehouse")
    return Path.home() / ".cache" / "lakehouse"


class PostgresSettings(BaseSettings):
    """PostgreSQL: Nessie's version store, Superset metadata, registry and serving schema."""

    model_config = SettingsConfigDict(env_prefix="LAKEHOUSE_POSTGRES_")

    # Where clients reach it (a Kubernetes Service, a compose service name, a managed
    # instance); empty: LAKEHOUSE_HOST, where the native stack runs it.
    host: str = ""
    port: int = 15432
    superuser: str = "postgres"
    superuser_password: SecretStr | None = None
    start_timeout: float = 60.0


class MinioSettings(BaseSettings):
    """MinIO, the default S3 store."""

    model_config = SettingsConfigDict(env_prefix="LAKEHOUSE_MINIO_")

    # Where clients reach it (a Kubernetes Service, a compose service name, a managed
    # instance); empty: LAKEHOUSE_HOST, where the native stack runs it.
    host: str = ""
    # The S3 endpoint as a URL (https://… for a managed store); empty: http://host:port.
    endpoint: str = ""
    port: int = 9000
    console_port: int = 9001
    root_user: str = "lakehouse-admin"
    root_password: SecretStr | None = None
    bucket: str = "lakehouse"
    region: str = "us-east-1"
    # Server-side encryption (SSE-S3) of every object written to the bucket, with a
    # generated key kept with the other secrets.
    encrypt: bool = True
    start_timeout: float = 60.0
    # Path-style requests (endpoint/bucket/key); false: virtual-hosted (bucket.endpoint).
    path_style: bool = True
    # Access key id of each service key (nessie, trino, …) on a store that names its
    # keys itself, as JSON; a key left out is its name (the MinIO the stack runs).
    access_key_ids: dict[str, str] = Field(default_factory=dict)
    # Sign with the environment's credentials (a workload identity, an instance role)
    # instead of service keys; the store's bucket and permissions are the operator's.
    ambient_credentials: bool = False
    # The CA (PEM) that signed an https endpoint's certificate; unset: the system's CAs.
    ca_file: Path | None = None


class NessieSettings(BaseSettings):
    """Nessie catalog with its JDBC version store and Iceberg REST endpoint."""

    model_config = SettingsConfigDict(env_prefix="LAKEHOUSE_NESSIE_")

    # Where clients reach it (a Kubernetes Service, a compose service name, a managed
    # instance); empty: LAKEHOUSE_HOST, where the native stack runs it.
    host: str = ""
    port: int = 19120
    management_port: int = 19121
    # How clients reach the API: plain HTTP (the native stack, on loopback) or HTTPS
    # (a cluster), verified against `ca_file` (unset: the system's CAs). The
    # management port (health) stays plain HTTP.
    scheme: Literal["http", "https"] = "http"
    ca_file: Path | None = None
    warehouse: str = "warehouse"
    heap: str = "512m"
    start_timeout: float = 120.0


class TrinoSettings(BaseSettings):
    """Trino single-node coordinator/worker."""

    model_config = SettingsConfigDict(env_prefix="LAKEHOUSE_TRINO_")

    # Where clients reach it (a Kubernetes Service, a compose service name, a managed
    # instance); empty: LAKEHOUSE_HOST, where the native stack runs it.
    host: str = ""
    port: int = 8080
    heap: str = "2560M"
    start_timeout: float = 180.0


class KafkaSettings(BaseSettings):
    """Kafka broker and controller in one KRaft process."""

    model_config = SettingsConfigDict(env_prefix="LAKEHOUSE_KAFKA_")

    # Where clients reach it (a Kubernetes Service, a compose service name, a managed
    # instance); empty: LAKEHOUSE_HOST, where the native stack runs it.
    host: str = ""
    # Bootstrap servers (host:port,…) of an external cluster; empty: host:port.
    bootstrap_servers: str = ""
    port: int = 9092
    controller_port: int = 9093
    # Copies of each partition: 1 for the native single broker, 3 for an HA cluster.
    replication_factor: int = Field(default=1, ge=1)
    topic: str = "readings"
    partitions: int = Field(default=6, ge=1)
    heap: str = "512m"
    start_timeout: float = 90.0
    # How clients reach an external cluster: SASL over TLS, TLS without SASL, or SASL
    # in the clear (the broker the stack runs, on loopback).
    security_protocol: Literal["SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "SASL_PLAINTEXT"
    # The CA (PEM) that signed the brokers' certificates; unset: the system's CAs.
    ca_file: Path | None = None


class IngestSettings(BaseSettings):
    """Kafka → bronze consumers and file ingest."""

    model_config = SettingsConfigDict(env_prefix="LAKEHOUSE_INGEST_")

    group_id: str = "bronze-readings"
    # Namespace of the readings/readings_rejected tables consumers write.
    namespace: str = Field(default="bronze", pattern=r"^[a-z0-9_]+$")
    max_rows: int = Field(default=500_000, ge=1)
    max_bytes: int = Field(default=128 * 1024 * 1024, ge=1024)
    max_age_seconds: float = Field(default=5.0, gt=0)
    metrics_port: int = 9108
    # A crashed member's partitions wait this long before moving to another member.
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    max_future_seconds: float = Field(default=86_400.0, ge=0)


class GatewaySettings(BaseSettings):
    """The device upload gateway."""

    model_config = SettingsConfigDict(env_prefix="LAKEHOUSE_GATEWAY_")

    @model_validator(mode="after")
    def _tls_pair(self) -> GatewaySettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError(
                "the gateway's TLS needs both a certificate and a key",
                fix="set LAKEHOUSE_GATEWAY_TLS_CERT and LAKEHOUSE_GATEWAY_TLS_KEY (or neither)",
            )
        return self

    port: int = 8088
    # The one service meant to face devices on a network: its own bind address, so
    # putting it on the LAN (0.0.0.0) leaves every other server on LAKEHOUSE_HOST.
    host: str = "127.0.0.1"
    # Serve HTTPS with this certificate chain and key (PEM); plain HTTP when unset.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    max_decompressed_bytes: int = Field(default=8 << 20, ge=1024)
    max_readings: int = Field(default=5_000, ge=1)
    requests_per_second: float = Field(default=20.0, gt=0)
    burst: int = Field(default=40, ge=1)
    delivery_timeout_seconds: float = Field(default=10.0, gt=0)


def _default_dbt_project() -> Path:
    return Path(__file__).resolve().parent.parent / "dbt"


class TransformSettings(BaseSettings):
    """`lakehouse transform`: dbt on a Nessie branch, published by merging into main."""

    model_config = SettingsConfigDict(env_prefix="LAKEHOUSE_TRANSFORM_")

    project_dir: Path = Field(default_factory=_default_dbt_project)
    # Prepended to every namespace the transform reads and writes (bronze included).
    schema_prefix: str = Field(default="", pattern=r"^[a-z0-9_]*$")
    threads: int = Field(default=4, ge=1, le=16)
    max_future_minutes: int = Field(default=10, ge=0)
    # The `--every` loop audits main (every test over every row) this often; 0: never.
    audit_every: float = Field(default=86_400, ge=0)
    trino_user: str = "lakehouse-transform"
    # Prometheus metrics of the transform loop (runs, durations, freshness per layer).
    metrics_port: int = 9181


class SupersetSettings(BaseSettings):
    """Superset, in a virtualenv of its own (its pins clash with ours)."""

    model_config = SettingsConfigDict(env_prefix="LAKEHOUSE_SUPERSET_")

    port: int = 8089
    version: str = "6.1.0"
    workers: int = Field(default=1, ge=1, le=16)
    threads: int = Field(default=8, ge=1, le=64)
    admin_user: str = Field(default="admin", pattern=r"^[a-z][a-z0-9_.-]{0,62}$")


class ServingSettings(BaseSettings):
    """The PostgreSQL serving layer dashboards read."""

    model_config = SettingsConfigDict(env_prefix="LAKEHOUSE_SERVING_")

    # Publish to serving after every transform run that published.
    publish_after_transform: bool = True
    # The PostgreSQL schema (in database `lakehouse`) dashboards read.
    schema_name: str = Field(default="serving", pattern=r"^[a-z_][a-z0-9_]{0,62}$")


class AuditSettings(BaseSettings):
    """The audit log: the receiver of Trino's query events (lakehouse.audit_receiver)."""

    model_config = SettingsConfigDict(env_prefix="LAKEHOUSE_AUDIT_")

    port: int = 8091
    # Log every Trino query (principal, statement, tables, outcome) in audit.events.
    trino_queries: bool = True


class TablePolicy(BaseModel):
    """How maintenance compacts one table (or every table of a layer)."""

    # Data files smaller than this are rewritten into larger ones.
    small_file_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Compact only once a table has at least this many small files.
    min_small_files: int = Field(default=8, ge=2)
    # Rewrite the manifests once a table has more than this many.
    max_manifests: int = Field(default=16, ge=1)


def _default_policies() -> dict[str, TablePolicy]:
    # Bronze gets a commit every few seconds: compact it early and often.
    return {
        "bronze": TablePolicy(min_small_files=4),
        "silver": TablePolicy(),
        "gold": TablePolicy(),
        "platinum": TablePolicy(),
        "internal": TablePolicy(),
    }


class MaintainSettings(BaseSettings):
    """`lakehouse maintain`: compaction, garbage collection and retention."""

    model_config = SettingsConfigDict(env_prefix="LAKEHOUSE_MAINTAIN_")

    # Per layer (`bronze`) or per table (`bronze.readings`, which wins), as JSON.
    policies: dict[str, TablePolicy] = Field(default_factory=_default_policies)
    trino_user: str = "lakehouse-maintain"
    # Prometheus metrics of the maintenance loop.
    metrics_port: int = 9182
    # Garbage collection runs at most this often (the supervisor's passes are more
    # frequent: compaction keeps bronze's file count down).
    gc_every_seconds: float = Field(default=3600.0, ge=0)
    # Main's commits of the last hours stay readable (time travel); older ones expire.
    history_retention_hours: float = Field(default=24.0, ge=0)
    # Files younger than this are never deleted: a writer may not have committed yet.
    gc_grace_seconds: float = Field(default=3600.0, ge=0)
    # A failed transform run's branch is kept this long for inspection.
    failed_branch_days: float = Field(default=7.0, ge=0)
    # Upload receipts are kept this long: an agent retrying a batch within it gets its
    # receipt back (later, silver's dedup on (device, seq) still keeps it exactly once).
    receipts_days: float = Field(default=7.0, ge=0)
    # Warn when unconsumed Kafka data would expire within this many hours.
    kafka_warning_hours: float = Field(default=24.0, ge=0)


class SupervisorSettings(BaseSettings):
    """The supervisor: which services of ours it runs and how it restarts what fails."""

    model_config = SettingsConfigDict(env_prefix="LAKEHOUSE_SUPERVISOR_")

    gateway: bool = True
    consumers: int = Field(default=1, ge=0, le=64)
    # Seconds between transform runs (0: no transform loop).
    transform_every: float = Field(default=30.0, ge=0)
    # The loop runs as soon as bronze has a new commit, looked for this often (0: it
    # runs every transform_every seconds only).
    transform_watch: float = Field(default=1.0, ge=0)
    # Seconds between maintenance passes (0: no maintenance loop).
    maintain_every: float = Field(default=300.0, ge=0)
    # Consecutive failed starts (exits or failed health checks) before giving up.
    max_restarts: int = Field(default=5, ge=0)
    backoff_initial_seconds: float = Field(default=1.0, gt=0)
    backoff_max_seconds: float = Field(default=30.0, gt=0)
    # A service that stayed healthy this long has its failure count reset.
    stable_seconds: float = Field(default=60.0, gt=0)
    health_interval_seconds: float = Field(default=5.0, gt=0)
    # Consecutive failed health checks of a running process before it is restarted.
    health_failures: int = Field(default=6, ge=1)
    # Prometheus metrics of the supervisor: each service's state and restarts, disk.
    metrics_port: int = 9180
    log_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    log_backups: int = Field(default=3, ge=1)


class Settings(BaseSettings):
    """Stack-wide settings; each service's own class hangs off it."""

    model_config = SettingsConfigDict(env_prefix="LAKEHOUSE_")

    home: Path = Field(default_factory=_default_home)
    cache_dir: Path = Field(default_factory=_default_cache)
    host: str = "127.0.0.1"
    # A directory of one file per secret (a mounted Kubernetes Secret) instead of the
    # home's credentials.json; see lakehouse.credentials.as_keys.
    credentials_dir: Path | None = None
    java_home: Path | None = None
    stop_timeout: float = 30.0
    # Unprivileged OS user every server and service runs as when started as root.
    os_user: str = Field(default="lakehouse", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    # The medallion layers, and `internal`: the pipeline's own work tables, which
    # analysts are not granted (lakehouse.trino_access).
    namespaces: tuple[str, ...] = ("bronze", "silver", "gold", "platinum", "internal")
    # Off only to measure what security costs (bench.security): Kafka without SASL and
    # ACLs, Trino over HTTP without passwords, access rules or audit events, MinIO
    # without encryption at rest. Refused unless every server stays on loopback.
    security: bool = True
    # The demo fleet (lakehouse.demo): devices of a few tenants sending through the
    # gateway, so a new platform shows live data. Off for real use: LAKEHOUSE_DEMO=false.
    demo: bool = True
    demo_interval_seconds: float = Field(default=5.0, gt=0)
    demo_metrics_port: int = 9183

    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    minio: MinioSettings = Field(default_factory=MinioSettings)
    nessie: NessieSettings = Field(default_factory=NessieSettings)
    trino: TrinoSettings = Field(default_factory=TrinoSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    transform: TransformSettings = Field(default_factory=TransformSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    superset: SupersetSettings = Field(default_factory=SupersetSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    maintain: MaintainSettings = Field(default_factory=MaintainSettings)
    supervisor: SupervisorSettings = Field(default_factory=SupervisorSettings)

    @model_validator(mode="after")
    def _ports_are_distinct(self) -> Settings:
        ports = self.ports()
        seen: dict[int, str] = {}
        for name, port in ports.items():
            if port in seen:
                raise ConfigError(
                    f"{name} and {seen[port]} are both configured for port {port}",
                    fix="give each service its own port (LAKEHOUSE_<SERVICE>_PORT)",
                )
            if not 1 <= port <= 65535:
                raise ConfigError(f"{name} port {port} is outside 1-65535")
            seen[port] = name
        return self

    @model_validator(mode="after")
    def _insecure_only_on_loopback(self) -> Settings:
        if self.security:
            return self
        for name, host in (
            ("LAKEHOUSE_HOST", self.host),
            ("LAKEHOUSE_GATEWAY_HOST", self.gateway.host),
        ):
            if not is_loopback(host):
                raise ConfigError(
                    f"security is off, yet {name} is {host}: every server would be open "
                    "to that network",
                    fix="turn security back on (LAKEHOUSE_SECURITY=true) or keep the "
                    "servers on 127.0.0.1",
                )
        return self

    def to_env(self) -> dict[str, str]:
        """These settings as `LAKEHOUSE_*` variables: a child process rebuilds them exactly."""
        env: dict[str, str] = {}
        for name, value in self:
            if isinstance(value, BaseSettings):
                prefix = str(value.model_config.get("env_prefix", ""))
                for sub_name, sub_value in value:
                    _put(env, f"{prefix}{sub_name}".upper(), sub_value)
            else:
                _put(env, f"LAKEHOUSE_{name}".upper(), value)
        return env

    def server_host(self, server: str) -> str:
        """Where clients reach `server` (postgres, minio, nessie, trino, kafka)."""
        own: str = getattr(self, server).host
        return own or self.host

    def s3_endpoint(self) -> str:
        return self.minio.endpoint or f"http://{self.server_host('minio')}:{self.minio.port}"

    def nessie_url(self) -> str:
        """Base URL of Nessie's API port (its REST APIs live under it)."""
        return f"{self.nessie.scheme}://{self.server_host('nessie')}:{self.nessie.port}"

    def kafka_bootstrap(self) -> str:
        return self.kafka.bootstrap_servers or f"{self.server_host('kafka')}:{self.kafka.port}"

    def ports(self) -> dict[str, int]:
        """Every port the stack binds, by a readable name."""
        return {
            "postgres": self.postgres.port,
            "minio": self.minio.port,
            "minio console": self.minio.console_port,
            "nessie": self.nessie.port,
            "nessie management": self.nessie.management_port,
            "trino": self.trino.port,
            "kafka": self.kafka.port,
            "kafka controller": self.kafka.controller_port,
            "gateway": self.gateway.port,
            "superset": self.superset.port,
            "audit": self.audit.port,
            "supervisor metrics": self.supervisor.metrics_port,
            "transform metrics": self.transform.metrics_port,
            "maintain metrics": self.maintain.metrics_port,
            "demo metrics": self.demo_metrics_port,
        }


@contextmanager
def environment_variables(values: dict[str, str]) -> Iterator[None]:
    """Set `values` in the process environment for a block, then restore what was there.

    For readers of the environment that take nothing else (dbt's env_var(), settings
    built in code that a block calls, child processes)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def is_loopback(host: str) -> bool:
    """Whether `host` is surely a loopback address (a host name could resolve to anything)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_settings() -> Settings:
    """The settings as shipped: nothing taken from the environment or a home."""
    return Settings.model_construct(
        postgres=PostgresSettings.model_construct(),
        minio=MinioSettings.model_construct(),
        nessie=NessieSettings.model_construct(),
        trino=TrinoSettings.model_construct(),
        kafka=KafkaSettings.model_construct(),
        ingest=IngestSettings.model_construct(),
        gateway=GatewaySettings.model_construct(),
        superset=SupersetSettings.model_construct(),
        audit=AuditSettings.model_construct(),
        transform=TransformSettings.model_construct(),
        serving=ServingSettings.model_construct(),
        maintain=MaintainSettings.model_construct(),
        supervisor=SupervisorSettings.model_construct(),
    )


# Settings about the machine rather than a lakehouse: an isolated process keeps them.
MACHINE_VARIABLES = frozenset(
    {"LAKEHOUSE_CACHE_DIR", "LAKEHOUSE_JAVA_HOME", "LAKEHOUSE_OS_USER", "LAKEHOUSE_LOG_LEVEL"}
)


# Linux hands out ports from 32768 up to clients' outgoing connections: an isolated stack
# listening up there could find its port taken by one, and not start.
EPHEMERAL_PORTS_START = 32_768
ISOLATED_PORTS = (
    "LAKEHOUSE_POSTGRES_PORT",
    "LAKEHOUSE_MINIO_PORT",
    "LAKEHOUSE_MINIO_CONSOLE_PORT",
    "LAKEHOUSE_NESSIE_PORT",
    "LAKEHOUSE_NESSIE_MANAGEMENT_PORT",
    "LAKEHOUSE_TRINO_PORT",
    "LAKEHOUSE_KAFKA_PORT",
    "LAKEHOUSE_KAFKA_CONTROLLER_PORT",
    "LAKEHOUSE_GATEWAY_PORT",
    "LAKEHOUSE_INGEST_METRICS_PORT",
    "LAKEHOUSE_SUPERSET_PORT",
    "LAKEHOUSE_AUDIT_PORT",
    "LAKEHOUSE_SUPERVISOR_METRICS_PORT",
    "LAKEHOUSE_TRANSFORM_METRICS_PORT",
    "LAKEHOUSE_MAINTAIN_METRICS_PORT",
    "LAKEHOUSE_DEMO_METRICS_PORT",
)


def isolate_process(home: Path, first_port: int) -> dict[str, str]:
    """Point this process (and its children) at a stack of its own: every `LAKEHOUSE_*`
    variable that could address another lakehouse (a user's exported LAKEHOUSE_HOME,
    LAKEHOUSE_POSTGRES_HOST, a topic…) is dropped, then the isolated ones are set."""
    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        if key not in MACHINE_VARIABLES:
            del os.environ[key]
    environment = isolated_environment(home, first_port)
    os.environ.update(environment)
    return environment


def isolated_environment(home: Path, first_port: int) -> dict[str, str]:
    """`LAKEHOUSE_*` variables for a stack of its own: its own home, and its ports taken
    in order from `first_port` (PostgreSQL first, then MinIO, … as ISOLATED_PORTS lists
    them), all below the ephemeral range.

    Tests and benchmarks run such a stack, so a lakehouse started with `make up` on the
    same machine is never touched. The transform and maintenance loops and the demo
    fleet are off: they run transforms and maintenance themselves, and send their own
    readings.
    """
    last_port = first_port + len(ISOLATED_PORTS) - 1
    if first_port < 1024 or last_port >= EPHEMERAL_PORTS_START:
        raise ConfigError(
            f"an isolated stack's ports {first_port}-{last_port} must lie between 1024 "
            f"and {EPHEMERAL_PORTS_START - 1}"
        )
    return {
        "LAKEHOUSE_HOME": str(home),
        **{key: str(first_port + index) for index, key in enumerate(ISOLATED_PORTS)},
        "LAKEHOUSE_SUPERVISOR_TRANSFORM_EVERY": "0",
        "LAKEHOUSE_SUPERVISOR_MAINTAIN_EVERY": "0",
        # A test's transform loop publishes; audits are what their own test runs.
        "LAKEHOUSE_TRANSFORM_AUDIT_EVERY": "0",
        "LAKEHOUSE_DEMO": "false",
    }


def _put(env: dict[str, str], key: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, SecretStr):
        env[key] = value.get_secret_value()
    elif isinstance(value, bool):
        env[key] = "true" if value else "false"
    elif isinstance(value, tuple | list):
        env[key] = json.dumps(list(value))
    elif isinstance(value, dict):
        env[key] = json.dumps(
            {k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in value.items()}
        )
    else:
        env[key] = str(value)
