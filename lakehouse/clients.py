"""Clients for the rest of the code base, all built from the same settings.

Heavy client libraries are imported inside the functions so that importing this
module stays cheap for commands that need none of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lakehouse.config import Settings
from lakehouse.credentials import Credentials
from lakehouse.s3 import s3_endpoint

if TYPE_CHECKING:
    import psycopg
    from pyiceberg.catalog.rest import RestCatalog
    from trino.dbapi import Connection as TrinoConnection


def nessie_api_url(settings: Settings) -> str:
    """Base of Nessie's native REST API (v2)."""
    return f"http://{settings.host}:{settings.nessie.port}/api/v2"


def iceberg_rest_url(settings: Settings, ref: str = "main") -> str:
    """Iceberg REST endpoint for one Nessie branch (`main` unless told otherwise)."""
    base = f"http://{settings.host}:{settings.nessie.port}/iceberg"
    return base if ref == "main" else f"{base}/{ref}"


def iceberg_catalog_properties(
    settings: Settings, credentials: Credentials, ref: str = "main"
) -> dict[str, str]:
    return {
        "type": "rest",
        "uri": iceberg_rest_url(settings, ref),
        "warehouse": settings.nessie.warehouse,
        "s3.endpoint": s3_endpoint(settings),
        "s3.access-key-id": credentials.minio_root_user,
        "s3.secret-access-key": credentials.minio_root_password,
        "s3.region": settings.minio.region,
        "s3.force-virtual-addressing": "false",
    }


def iceberg_catalog(settings: Settings, credentials: Credentials, ref: str = "main") -> RestCatalog:
    """A pyiceberg catalog on the Nessie branch `ref`."""
    from pyiceberg.catalog.rest import RestCatalog

    name = "lake" if ref == "main" else f"lake_{ref}"
    return RestCatalog(name, **iceberg_catalog_properties(settings, credentials, ref))


def trino_connection(
    settings: Settings,
    *,
    catalog: str = "lake",
    schema: str | None = None,
    user: str = "lakehouse",
    request_timeout: float = 300.0,
) -> TrinoConnection:
    """A Trino DB-API connection (no auth on the loopback-only default stack)."""
    import trino

    connection: TrinoConnection = trino.dbapi.connect(  # type: ignore[no-untyped-call]
        host=settings.host,
        port=settings.trino.port,
        user=user,
        catalog=catalog,
        schema=schema,
        http_scheme="http",
        request_timeout=request_timeout,
    )
    return connection


def kafka_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """confluent-kafka configuration for the stack's broker."""
    config: dict[str, Any] = {"bootstrap.servers": f"{settings.host}:{settings.kafka.port}"}
    config.update(overrides)
    return config


def postgres_connection(
    settings: Settings,
    credentials: Credentials,
    *,
    role: str = "lakehouse",
    dbname: str | None = None,
) -> psycopg.Connection[tuple[Any, ...]]:
    """A PostgreSQL connection as one of the bootstrap roles (never the superuser)."""
    import psycopg

    return psycopg.connect(
        host=settings.host,
        port=settings.postgres.port,
        user=role,
        password=credentials.database_passwords[role],
        dbname=dbname or role,
        connect_timeout=5,
    )
