"""pyiceberg's PyArrow file IO, verifying the object store against a CA of its own.

pyiceberg hands pyarrow's S3 file system no CA, so an https endpoint signed by a
deployment's private CA (the chart's in-cluster MinIO) would be refused. This file IO
builds the same file system and adds `tls_ca_file_path` from the `s3.ca-file` property;
lakehouse.clients names it (`py-io-impl`) only when a CA is configured.
"""

from __future__ import annotations

from pyarrow.fs import FileSystem, S3FileSystem
from pyiceberg.io.pyarrow import PyArrowFileIO

# The catalog property holding the CA's PEM file.
S3_CA_FILE = "s3.ca-file"


class CaVerifyingFileIO(PyArrowFileIO):
    """PyArrowFileIO whose S3 connections trust the CA in `s3.ca-file`."""

    def _initialize_s3_fs(self, netloc: str | None) -> FileSystem:
        fs = super()._initialize_s3_fs(netloc)
        ca_file = self.properties.get(S3_CA_FILE)
        if not ca_file or not isinstance(fs, S3FileSystem):
            return fs
        # The file system's own constructor arguments (what pickling uses), plus the CA.
        _, (arguments,) = fs.__reduce__()
        return S3FileSystem(**{**arguments, "tls_ca_file_path": ca_file})
