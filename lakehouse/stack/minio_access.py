"""One MinIO access key per service, each with a policy scoped to what it does.

The root keys are used only by the stack's bootstrap (bucket, encryption, these keys).

- `nessie`, `trino`: read and write the warehouse (Nessie writes table metadata, Trino
  writes silver and up, compacts and expires).
- `ingest`: read and write only the tables of namespaces whose names end in `bronze`
  (`bronze`, and the prefixed namespaces of isolated environments).
- `reader`: read the warehouse, write nothing (external engines, analysts' tools, and
  the transform's reads of bronze metadata).
- `maintain`: read, write and delete in the warehouse (compaction of bronze, garbage
  collection).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from lakehouse.config import Settings
from lakehouse.credentials import Credentials

_READ = ["s3:GetObject"]
_WRITE = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
          "s3:ListMultipartUploadParts"]  # fmt: skip


def _policy(bucket: str, object_actions: list[str], prefixes: list[str]) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetBucketLocation", "s3:ListBucket",
                           "s3:ListBucketMultipartUploads"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
            },
            {
                "Effect": "Allow",
                "Action": object_actions,
                "Resource": [f"arn:aws:s3:::{bucket}/{prefix}" for prefix in prefixes],
            },
        ],
    }  # fmt: skip


def policies(settings: Settings) -> dict[str, dict[str, Any]]:
    """Policy document of each service key, by key name."""
    bucket, warehouse = settings.minio.bucket, settings.nessie.warehouse
    everything = [f"{warehouse}/*"]
    return {
        "nessie": _policy(bucket, _WRITE, everything),
        "trino": _policy(bucket, _WRITE, everything),
        "ingest": _policy(bucket, _WRITE, [f"{warehouse}/*bronze/*"]),
        "reader": _policy(bucket, _READ, everything),
        "maintain": _policy(bucket, _WRITE, everything),
    }


def policy_name(key: str) -> str:
    return f"lakehouse-{key}"


def ensure_service_keys(settings: Settings, credentials: Credentials) -> None:
    """Create or update every service key and its policy (idempotent)."""
    from minio import MinioAdmin
    from minio.credentials.providers import StaticProvider

    endpoint = urlsplit(settings.s3_endpoint())
    http_client = None
    if settings.minio.ca_file is not None:  # a private CA (the chart's in-cluster MinIO)
        from urllib3 import PoolManager, Retry, Timeout

        http_client = PoolManager(
            timeout=Timeout(connect=30, read=300),
            cert_reqs="CERT_REQUIRED",
            ca_certs=str(settings.minio.ca_file),
            retries=Retry(total=5, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
    admin = MinioAdmin(
        endpoint=endpoint.netloc,
        credentials=StaticProvider(credentials.minio_root_user, credentials.minio_root_password),
        secure=endpoint.scheme == "https",
        region=settings.minio.region,
        http_client=http_client,
    )
    for key, document in policies(settings).items():
        admin.policy_add(policy_name(key), policy=document)
        admin.user_add(key, credentials.minio_keys[key])
        admin.policy_set(policy_name(key), user=key)
