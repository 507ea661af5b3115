"""Clients for the rest of the code base, all built from the same settings.

Heavy client libraries are imported inside the functions so that importing this
module stays cheap for commands that need none of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lakehouse.catalog_tokens import mint
from lakehouse.config import Settings
from lakehouse.credentials import Credentials
from lakehouse.credentials import load as load_credentials
from lakehouse.errors import ConfigError
from lakehouse.s3 import s3_endpoint, s3_keys

if TYPE_CHECKING:
    import httpx
    import psycopg
    from pyiceberg.catalog.rest import RestCatalog
    from trino.dbapi import Connection as TrinoConnection

# pyiceberg's file IO for every catalog (named, not imported: it loads pyarrow), and
# the property that gives it a private CA's PEM file.
ICEBERG_FILE_IO = "lakehouse.iceberg_io.LakehouseFileIO"
S3_CA_FILE = "s3.ca-file"


def nessie_api_url(settings: Settings) -> str:
    """Base of Nessie's native REST API (v2)."""
    return f"{settings.nessie_url()}/api/v2"


def iceberg_rest_url(settings: Settings, ref: str = "main") -> str:
    """Iceberg REST endpoint for one Nessie branch (`main` unless told otherwise)."""
    base = f"{settings.nessie_url()}/iceberg"
    return base if ref == "main" else f"{base}/{ref}"


def nessie_token(credentials: Credentials, principal: str = "lakehouse") -> str:
    """The bearer token `principal` presents to Nessie (lakehouse.catalog_tokens)."""
    return mint(credentials.nessie_signing_key, principal)


def nessie_http(
    settings: Settings, credentials: Credentials, principal: str, *, timeout: float
) -> httpx.Client:
    """An HTTP client on Nessie's REST API v2 as `principal`: its token on every request,
    the server verified against the deployment's CA when one is set."""
    import httpx

    from lakehouse.tls import verification

    return httpx.Client(
        base_url=nessie_api_url(settings),
        headers={"Authorization": f"Bearer {nessie_token(credentials, principal)}"},
        timeout=timeout,
        verify=verification(settings.nessie.ca_file),
    )


def iceberg_catalog_properties(
    settings: Settings,
    credentials: Credentials,
    ref: str = "main",
    *,
    s3_key: str,
    principal: str = "lakehouse",
) -> dict[str, Any]:
    """pyiceberg's catalog properties: Nessie's Iceberg REST endpoint for `ref` with a
    token for `principal`, and the object store signed with the MinIO key `s3_key`.
    Private CAs (settings' `nessie.ca_file`, `minio.ca_file`) verify both."""
    properties: dict[str, Any] = {
        "type": "rest",
        "uri": iceberg_rest_url(settings, ref),
        "token": nessie_token(credentials, principal),
        "warehouse": settings.nessie.warehouse,
        "s3.endpoint": s3_endpoint(settings),
        "s3.region": settings.minio.region,
        "s3.force-virtual-addressing": "false" if settings.minio.path_style else "true",
        "py-io-impl": ICEBERG_FILE_IO,
    }
    if not settings.minio.ambient_credentials:  # else the environment's credential chain
        access_key, secret = s3_keys(credentials, s3_key, settings)
        properties |= {"s3.access-key-id": access_key, "s3.secret-access-key": secret}
    if settings.nessie.ca_file is not None:
        properties["ssl"] = {"cabundle": str(settings.nessie.ca_file)}
    if settings.minio.ca_file is not None:
        properties[S3_CA_FILE] = str(settings.minio.ca_file)
    return properties


def iceberg_catalog(
    settings: Settings,
    credentials: Credentials,
    ref: str = "main",
    *,
    s3_key: str,
    principal: str = "lakehouse",
) -> RestCatalog:
    """A pyiceberg catalog on the Nessie branch `ref`, reading and writing files with the
    MinIO key `s3_key` ("ingest" writes bronze, "reader" only reads), known to Nessie as
    `principal`."""
    from pyiceberg.catalog.rest import RestCatalog

    name = "lake" if ref == "main" else f"lake_{ref}"
    properties = iceberg_catalog_properties(
        settings, credentials, ref, s3_key=s3_key, principal=principal
    )
    return RestCatalog(name, **properties)


def trino_connection(
    settings: Settings,
    *,
    catalog: str = "lake",
    schema: str | None = None,
    user: str = "lakehouse",
    password: str | None = None,
    credentials: Credentials | None = None,
    request_timeout: float = 300.0,
) -> TrinoConnection:
    """A Trino DB-API connection over HTTPS, verified against the stack's CA.

    `user` defaults to the platform's engineer principal; the platform's own principals
    find their password in the credentials (read from the home unless given), others
    pass theirs.
    """
    import requests
    import trino
    from trino.auth import BasicAuthentication

    from lakehouse.tls import ca_path

    if password is None:
        password = (credentials or load_credentials(settings)).trino_passwords.get(user)
        if password is None:
            raise ConfigError(f"no password for Trino user {user!r}", fix="pass password=")
    session = requests.Session()
    session.verify = str(ca_path(settings.home))
    # REQUESTS_CA_BUNDLE and friends would replace the stack's CA with the system's.
    session.trust_env = False
    connection: TrinoConnection = trino.dbapi.connect(  # type: ignore[no-untyped-call]
        host=settings.server_host("trino"),
        port=settings.trino.port,
        user=user,
        auth=BasicAuthentication(user, password) if settings.security else None,
        catalog=catalog,
        schema=schema,
        http_scheme="https" if settings.security else "http",
        http_session=session,
        request_timeout=request_timeout,
    )
    return connection


def kafka_config(
    settings: Settings,
    principal: str,
    *,
    credentials: Credentials | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """confluent-kafka configuration for the stack's broker, signed in as `principal`.

    Every client authenticates (SASL/SCRAM-SHA-512) and may do only what the ACLs of
    its principal allow (lakehouse.stack.kafka_acl).
    """
    secrets = credentials or load_credentials(settings)
    if principal not in secrets.kafka_passwords:
        raise ConfigError(
            f"no Kafka principal {principal!r}",
            fix=f"use one of {', '.join(sorted(secrets.kafka_passwords))}",
        )
    config: dict[str, Any] = {"bootstrap.servers": settings.kafka_bootstrap()}
    if settings.security:
        protocol = settings.kafka.security_protocol
        config["security.protocol"] = protocol
        if protocol != "SSL":
            config |= {
                "sasl.mechanisms": "SCRAM-SHA-512",
                "sasl.username": principal,
                "sasl.password": secrets.kafka_passwords[principal],
            }
        if settings.kafka.ca_file is not None:
            config["ssl.ca.location"] = str(settings.kafka.ca_file)
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
        host=settings.server_host("postgres"),
        port=settings.postgres.port,
        user=role,
        password=credentials.database_passwords[role],
        dbname=dbname or role,
        connect_timeout=5,
    )
