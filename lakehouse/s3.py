"""The one place that talks to the S3 API directly; any S3-compatible store works."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from lakehouse.config import Settings
from lakehouse.credentials import Credentials

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def s3_endpoint(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.minio.port}"


def s3_client(settings: Settings, credentials: Credentials) -> S3Client:
    """A path-style S3 client for the stack's object store."""
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint(settings),
        aws_access_key_id=credentials.minio_root_user,
        aws_secret_access_key=credentials.minio_root_password,
        region_name=settings.minio.region,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3},
            connect_timeout=3,
            read_timeout=30,
        ),
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
