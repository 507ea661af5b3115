"""MinIO: each service key can do its job and nothing else; the root keys stay home."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from lakehouse.s3 import s3_client

pytestmark = pytest.mark.integration


def _denied(action) -> str:
    with pytest.raises(ClientError) as refused:
        action()
    return refused.value.response["Error"]["Code"]


def _put(s3, bucket: str, key: str) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=b"x")


@pytest.fixture
def keys(stack_settings, credentials):
    return {name: s3_client(stack_settings, credentials, name) for name in credentials.minio_keys}


def test_the_ingest_key_writes_bronze_tables_only(stack_settings, keys, unique):
    s3, bucket = keys["ingest"], stack_settings.minio.bucket
    warehouse = stack_settings.nessie.warehouse
    for allowed in (f"{warehouse}/bronze/t_{unique}/x", f"{warehouse}/p{unique}_bronze/t/x"):
        _put(s3, bucket, allowed)
        assert s3.get_object(Bucket=bucket, Key=allowed)["Body"].read() == b"x"
        s3.delete_object(Bucket=bucket, Key=allowed)
    for refused in (f"{warehouse}/silver/t_{unique}/x", f"{warehouse}/gold/t_{unique}/x",
                    f"elsewhere/{unique}"):  # fmt: skip
        assert _denied(lambda key=refused: _put(s3, bucket, key)) == "AccessDenied"


def test_the_reader_key_reads_and_writes_nothing(stack_settings, keys, unique):
    bucket, key = (
        stack_settings.minio.bucket,
        f"{stack_settings.nessie.warehouse}/silver/r_{unique}",
    )
    _put(keys["trino"], bucket, key)
    try:
        assert keys["reader"].get_object(Bucket=bucket, Key=key)["Body"].read() == b"x"
        assert _denied(lambda: _put(keys["reader"], bucket, key)) == "AccessDenied"
        assert _denied(lambda: keys["reader"].delete_object(Bucket=bucket, Key=key)) == (
            "AccessDenied"
        )
    finally:
        keys["trino"].delete_object(Bucket=bucket, Key=key)


@pytest.mark.parametrize("name", ["trino", "nessie"])
def test_catalog_and_engine_keys_write_the_warehouse_only(stack_settings, keys, unique, name):
    s3, bucket = keys[name], stack_settings.minio.bucket
    inside = f"{stack_settings.nessie.warehouse}/gold/{name}_{unique}"
    _put(s3, bucket, inside)
    s3.delete_object(Bucket=bucket, Key=inside)
    assert _denied(lambda: _put(s3, bucket, f"elsewhere/{unique}")) == "AccessDenied"


@pytest.mark.parametrize("name", ["ingest", "reader", "trino", "nessie"])
def test_no_service_key_administers_the_store(stack_settings, keys, unique, name):
    s3 = keys[name]
    assert _denied(lambda: s3.create_bucket(Bucket=f"b-{unique}")) == "AccessDenied"
    assert (
        _denied(lambda: s3.delete_bucket_encryption(Bucket=stack_settings.minio.bucket))
        == "AccessDenied"
    )


def test_only_minio_itself_holds_the_root_keys(stack_settings, credentials):
    status = subprocess.run(
        [sys.executable, "-m", "lakehouse", "stack", "status", "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    services = {s["name"]: s["pid"] for s in json.loads(status.stdout) if s["pid"]}
    assert {"nessie", "trino", "gateway"} <= set(services)
    secret = credentials.minio_root_password.encode()
    for name, pid in services.items():
        environment = Path(f"/proc/{pid}/environ").read_bytes()
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        holds = secret in environment or secret in command
        assert holds == (name == "minio"), name
