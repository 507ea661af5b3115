"""Settings, one pydantic-settings class per service, all under the `LAKEHOUSE_` prefix.

`Settings()` is built once in `main()` (or a test fixture) and passed down; nothing
reads the environment at import time. Example: `LAKEHOUSE_TRINO_PORT=18080` moves
Trino, `LAKEHOUSE_HOME=/srv/lakehouse` moves all state.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lakehouse.errors import ConfigError


def _default_home() -> Path:
    return Path.cwd() / ".lakehouse"


def _default_cache() -> Path:
    return Path.home() / ".cache" / "lakehouse"


class PostgresSettings(BaseSettings):
    """PostgreSQL: Nessie's version store, Superset metadata, registry and serving schema."""

    model_config = SettingsConfigDict(env_prefix="LAKEHOUSE_POSTGRES_")

    port: int = 15432
    superuser: str = "postgres"
    superuser_password: SecretStr | None = None
    os_user: str = Field(
        default="lakehouse-pg",
        description="Unprivileged OS user that runs PostgreSQL when the stack starts as root.",
    )
    start_timeout: float = 60.0


class MinioSettings(BaseSettings):
    """MinIO, the default S3 store."""

    model_config = SettingsConfigDict(env_prefix="LAKEHOUSE_MINIO_")

    port: int = 9000
    console_port: int = 9001
    root_user: str = "lakehouse-admin"
    root_password: SecretStr | None = None
    bucket: str = "lakehouse"
    region: str = "us-east-1"
    start_timeout: float = 60.0


class NessieSettings(BaseSettings):
    """Nessie catalog with its JDBC version store and Iceberg REST endpoint."""

    model_config = SettingsConfigDict(env_prefix="LAKEHOUSE_NESSIE_")

    port: int = 19120
    management_port: int = 19121
    warehouse: str = "warehouse"
    heap: str = "512m"
    start_timeout: float = 120.0


class TrinoSettings(BaseSettings):
    """Trino single-node coordinator/worker."""

    model_config = SettingsConfigDict(env_prefix="LAKEHOUSE_TRINO_")

    port: int = 8080
    heap: str = "3G"
    start_timeout: float = 180.0


class KafkaSettings(BaseSettings):
    """Kafka broker and controller in one KRaft process."""

    model_config = SettingsConfigDict(env_prefix="LAKEHOUSE_KAFKA_")

    port: int = 9092
    controller_port: int = 9093
    topic: str = "readings"
    partitions: int = Field(default=6, ge=1)
    heap: str = "512m"
    start_timeout: float = 90.0


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

    port: int = 8088
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
    trino_user: str = "lakehouse-transform"


class Settings(BaseSettings):
    """Stack-wide settings; each service's own class hangs off it."""

    model_config = SettingsConfigDict(env_prefix="LAKEHOUSE_")

    home: Path = Field(default_factory=_default_home)
    cache_dir: Path = Field(default_factory=_default_cache)
    host: str = "127.0.0.1"
    java_home: Path | None = None
    stop_timeout: float = 30.0
    namespaces: tuple[str, ...] = ("bronze", "silver", "gold", "platinum")

    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    minio: MinioSettings = Field(default_factory=MinioSettings)
    nessie: NessieSettings = Field(default_factory=NessieSettings)
    trino: TrinoSettings = Field(default_factory=TrinoSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    transform: TransformSettings = Field(default_factory=TransformSettings)

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
        }
