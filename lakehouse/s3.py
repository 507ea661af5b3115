"""The one place that talks to the S3 API directly; any S3-compatible store works."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from lakehouse.config import Settings
from lakehouse.credentials import Credentials
from lakehouse.errors import ConfigError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def s3_endpoint(settings: Settings) -> str:
    return settings.s3_endpoint()


# The MinIO root keys, for the stack's bootstrap only.
ROOT_KEY = "root"


def s3_keys(credentials: Credentials, key: str, settings: Settings) -> tuple[str, str]:
    """(access key id, secret) of a service key (lakehouse.stack.minio_access) or the root.

    The id is the key's name unless the settings give the store's own id for it."""
    if key == ROOT_KEY:
        return credentials.minio_root_user, credentials.minio_root_password
    if key not in credentials.minio_keys:
        raise ConfigError(
            f"no MinIO key {key!r}", fix=f"use one of {', '.join(sorted(credentials.minio_keys))}"
        )
    return settings.minio.access_key_ids.get(key, key), credentials.minio_keys[key]


def s3_client(settings: Settings, credentials: Credentials, key: str) -> S3Client:
    """An S3 client for the stack's object store, signed with `key` (or, with ambient
    credentials, with whatever the environment provides)."""
    access_key: str | None = None
    secret: str | None = None
    if not settings.minio.ambient_credentials:  # None: boto3's own credential chain
        access_key, secret = s3_keys(credentials, key, settings)
    return boto3_s3(
        endpoint=s3_endpoint(settings),
        access_key=access_key,
        secret=secret,
        region=settings.minio.region,
        ca_file=str(settings.minio.ca_file) if settings.minio.ca_file is not None else None,
        path_style=settings.minio.path_style,
    )


def boto3_s3(
    *,
    endpoint: str | None,
    access_key: str | None,
    secret: str | None,
    region: str | None,
    ca_file: str | None,
    path_style: bool,
    session_token: str | None = None,
) -> S3Client:
    """The boto3 S3 client every part of the platform uses: without keys, boto3's own
    credential chain; without a CA file, the system's CAs."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        aws_session_token=session_token,
        region_name=region,
        verify=ca_file,
        config=Config(
            s3={"addressing_style": "path" if path_style else "virtual"},
            retries={"max_attempts": 3},
            connect_timeout=3,
            read_timeout=30,
        ),
    )


def encrypt_by_default(client: S3Client, bucket: str) -> None:
    """Every object written to `bucket` from now on is encrypted (SSE-S3, AES-256)."""
    client.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )


def ensure_bucket(client: S3Client, bucket: str) -> bool:
    """Create `bucket` unless it exists. True if it was created."""
    try:
        client.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
    client.create_bucket(Bucket=bucket)
    return True
