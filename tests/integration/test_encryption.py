"""Encryption at rest: what ingestion writes is stored encrypted and still reads back."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest
from confluent_kafka import Producer

from ingest.kafka_consumer import BronzeConsumer, CommitPolicy
from lakehouse.clients import iceberg_catalog, kafka_config, trino_connection
from lakehouse.s3 import ROOT_KEY, s3_client
from tests.bad_records import good_message

pytestmark = pytest.mark.integration

READINGS = 300
# Every Parquet file starts and ends with these bytes; stored in the clear, they show.
PARQUET_MAGIC = b"PAR1"


def _stored_bytes(settings, bucket: str, key: str) -> bytes:
    """What MinIO keeps on disk for one object (inlined metadata and parts)."""
    folder = settings.home / "minio" / "data" / bucket / key
    files = [path for path in folder.rglob("*") if path.is_file()]
    assert files, f"nothing stored under {folder}"
    return b"".join(path.read_bytes() for path in files)


def test_the_bucket_encrypts_by_default(stack_settings, credentials):
    s3 = s3_client(stack_settings, credentials, ROOT_KEY)  # the bucket's configuration
    rules = s3.get_bucket_encryption(Bucket=stack_settings.minio.bucket)[
        "ServerSideEncryptionConfiguration"
    ]["Rules"]
    assert rules == [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]


def test_ingested_files_are_stored_encrypted_and_read_back_through_trino(
    stack_settings, credentials, topic_factory, unique
):
    topic = topic_factory(partitions=1)
    producer = Producer(kafka_config(stack_settings, "simulate", acks="all"))
    for seq in range(1, READINGS + 1):
        producer.produce(topic, value=good_message(seq))
    assert producer.flush(30) == 0
    tables = (f"bronze.encrypted_{unique}", f"bronze.encrypted_rejected_{unique}")
    BronzeConsumer(
        stack_settings, credentials, topic=topic, tables=tables,
        policy=CommitPolicy(max_rows=READINGS, max_age_seconds=1),
    ).run(idle_exit_seconds=3)  # fmt: skip
    catalog = iceberg_catalog(stack_settings, credentials, s3_key="ingest")
    try:
        table = catalog.load_table(tables[0])
        data_files = [task.file.file_path for task in table.scan().plan_files()]
        assert data_files
        snapshot = table.current_snapshot()
        assert snapshot is not None
        written = [*data_files, snapshot.manifest_list, table.metadata_location]
        s3 = s3_client(stack_settings, credentials, "reader")
        for location in written:
            url = urlparse(location)
            key = url.path.lstrip("/")
            head = s3.head_object(Bucket=url.netloc, Key=key)
            assert head["ServerSideEncryption"] == "AES256", location
            if location in data_files:
                # The plain file is Parquet; on disk not even its magic bytes show.
                plain = s3.get_object(Bucket=url.netloc, Key=key)["Body"].read()
                assert plain.startswith(PARQUET_MAGIC) and plain.endswith(PARQUET_MAGIC)
                assert PARQUET_MAGIC not in _stored_bytes(stack_settings, url.netloc, key)

        cursor = trino_connection(stack_settings).cursor()
        cursor.execute(f"select count(*), sum(seq) from lake.{tables[0]}")
        assert cursor.fetchall() == [[READINGS, READINGS * (READINGS + 1) // 2]]
    finally:
        for name in tables:
            if catalog.table_exists(name):
                catalog.drop_table(name)
