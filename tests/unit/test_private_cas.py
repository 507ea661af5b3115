"""Clients verifying servers against a deployment's private CA (the chart's in-cluster
servers with `tls.internal`): Nessie over HTTPS, the object store over HTTPS, through
every client library the platform uses. The native stack's defaults stay plain HTTP."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from lakehouse.clients import iceberg_catalog_properties, iceberg_rest_url, nessie_api_url
from lakehouse.config import Settings, default_settings
from lakehouse.credentials import Credentials
from lakehouse.tls import ca_path, ensure_ca, verification


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("LAKEHOUSE_"):
            monkeypatch.delenv(key)


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    ensure_ca(tmp_path)
    return ca_path(tmp_path)


def test_the_native_stack_keeps_plain_http_on_loopback():
    settings = Settings()
    assert settings.nessie_url() == f"http://127.0.0.1:{settings.nessie.port}"
    assert settings.s3_endpoint().startswith("http://")
    properties = iceberg_catalog_properties(
        settings, Credentials.generate(default_settings()), s3_key="ingest"
    )
    assert not {"ssl", "s3.ca-file"} & set(properties)
    assert verification(None) is True


def test_nessie_and_the_store_over_https_verified_against_the_ca(monkeypatch, ca_file):
    monkeypatch.setenv("LAKEHOUSE_NESSIE_HOST", "nessie")
    monkeypatch.setenv("LAKEHOUSE_NESSIE_SCHEME", "https")
    monkeypatch.setenv("LAKEHOUSE_NESSIE_CA_FILE", str(ca_file))
    monkeypatch.setenv("LAKEHOUSE_MINIO_ENDPOINT", "https://minio:9000")
    monkeypatch.setenv("LAKEHOUSE_MINIO_CA_FILE", str(ca_file))
    settings = Settings()
    port = settings.nessie.port
    assert nessie_api_url(settings) == f"https://nessie:{port}/api/v2"
    assert iceberg_rest_url(settings, "run-7") == f"https://nessie:{port}/iceberg/run-7"
    context = verification(settings.nessie.ca_file)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "lakehouse private CA"),),)
    ]
    properties = iceberg_catalog_properties(
        settings, Credentials.generate(default_settings()), s3_key="ingest"
    )
    assert properties["ssl"] == {"cabundle": str(ca_file)}
    assert properties["s3.ca-file"] == str(ca_file)

    from lakehouse.s3 import s3_client

    client = s3_client(settings, Credentials.generate(default_settings()), "ingest")
    assert client._endpoint.host == "https://minio:9000"
    assert client._endpoint.http_session._verify == str(ca_file)


def test_pyiceberg_reads_and_writes_the_store_with_the_ca(monkeypatch, ca_file):
    """pyiceberg gives pyarrow no CA: the file IO the properties name adds it."""
    from pyarrow.fs import S3FileSystem
    from pyiceberg.io import load_file_io

    monkeypatch.setenv("LAKEHOUSE_MINIO_ENDPOINT", "https://minio:9000")
    monkeypatch.setenv("LAKEHOUSE_MINIO_CA_FILE", str(ca_file))
    settings = Settings()
    properties = iceberg_catalog_properties(
        settings, Credentials.generate(default_settings()), s3_key="ingest"
    )
    io = load_file_io(properties)
    assert type(io).__name__ == "LakehouseFileIO"
    fs = io.fs_by_scheme("s3", "lakehouse")
    assert isinstance(fs, S3FileSystem)
    _, (arguments,) = fs.__reduce__()
    assert arguments["tls_ca_file_path"] == str(ca_file)
    assert arguments["endpoint_override"] == "https://minio:9000"
    assert arguments["access_key"] == "ingest"
    assert arguments["region"] == settings.minio.region
