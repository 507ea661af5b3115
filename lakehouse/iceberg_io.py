"""pyiceberg's PyArrow file IO, made to leave no directory marker and to trust a private CA.

Two things pyiceberg's own PyArrowFileIO does not do:

- **Delete without a marker.** pyarrow's S3 file system, after deleting a file, writes an
  empty `dir/` object for its parent so that the "directory" survives. A table with
  `write.metadata.delete-after-commit.enabled` deletes old metadata on every commit, so
  each streaming commit would leave `…/metadata/` in the bucket. This IO deletes S3
  objects with one plain DeleteObject instead.
- **Verify a private CA.** pyiceberg hands pyarrow no CA, so an https endpoint signed by
  a deployment's private CA (the chart's in-cluster MinIO) would be refused. This IO
  adds `tls_ca_file_path` from the `s3.ca-file` property.

lakehouse.clients names it (`py-io-impl`, ICEBERG_FILE_IO) in every catalog it builds.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from pyarrow.fs import FileSystem, S3FileSystem
from pyiceberg.io import InputFile, OutputFile
from pyiceberg.io.pyarrow import PyArrowFileIO

from lakehouse.clients import S3_CA_FILE
from lakehouse.s3 import boto3_s3

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

S3_SCHEMES = frozenset({"s3", "s3a", "s3n"})


class LakehouseFileIO(PyArrowFileIO):
    """PyArrowFileIO whose S3 deletes leave no directory marker and whose S3 connections
    trust the CA in `s3.ca-file`."""

    def __init__(self, properties: dict[str, Any] | None = None) -> None:
        super().__init__(properties or {})
        self._client: S3Client | None = None
        self._client_lock = threading.Lock()

    def _initialize_s3_fs(self, netloc: str | None) -> FileSystem:
        fs = super()._initialize_s3_fs(netloc)
        ca_file = self.properties.get(S3_CA_FILE)
        if not ca_file or not isinstance(fs, S3FileSystem):
            return fs
        # The file system's own constructor arguments (what pickling uses), plus the CA.
        _, (arguments,) = fs.__reduce__()
        return S3FileSystem(**{**arguments, "tls_ca_file_path": ca_file})

    def delete(self, location: str | InputFile | OutputFile) -> None:
        text = location.location if isinstance(location, (InputFile, OutputFile)) else location
        scheme, _, path = self.parse_location(text, self.properties)
        if scheme not in S3_SCHEMES:
            super().delete(location)
            return
        bucket, _, key = path.partition("/")
        self._s3().delete_object(Bucket=bucket, Key=key)

    def _s3(self) -> S3Client:
        with self._client_lock:
            if self._client is None:
                self._client = s3_client_from_properties(self.properties)
            return self._client


def s3_client_from_properties(properties: dict[str, Any]) -> S3Client:
    """A boto3 client for the store pyiceberg's `s3.*` properties describe; without keys,
    boto3's own credential chain (ambient credentials)."""
    virtual = str(properties.get("s3.force-virtual-addressing", "false")).lower() == "true"
    return boto3_s3(
        endpoint=properties.get("s3.endpoint"),
        access_key=properties.get("s3.access-key-id"),
        secret=properties.get("s3.secret-access-key"),
        session_token=properties.get("s3.session-token"),
        region=properties.get("s3.region"),
        ca_file=properties.get(S3_CA_FILE),
        path_style=not virtual,
    )
