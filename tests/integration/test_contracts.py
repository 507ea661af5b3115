"""Bronze contracts: partitioning, and the schema evolution policy against a real table."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from ingest.readings import READINGS_ARROW, ReadingsBuilder, Source
from lakehouse.clients import iceberg_catalog, trino_connection
from lakehouse.contracts import (
    READINGS,
    READINGS_SCHEMA,
    READINGS_SPEC,
    STREAMING_TABLE_PROPERTIES,
    add_optional_field,
)
from lakehouse.errors import ConfigError
from lakehouse.s3 import s3_client
from tests.bad_records import good_message

pytestmark = pytest.mark.integration


@pytest.fixture
def streaming_table(stack_settings, credentials, unique) -> Iterator[tuple[Catalog, str, Table]]:
    """A bronze table of this test's own with the streaming writers' properties:
    (catalog, name, table), dropped at the end."""
    catalog = iceberg_catalog(stack_settings, credentials, s3_key="ingest")
    name = f"bronze.contract_{unique}"
    table = catalog.create_table(
        name, schema=READINGS_SCHEMA, partition_spec=READINGS_SPEC,
        properties=STREAMING_TABLE_PROPERTIES,
    )  # fmt: skip
    yield catalog, name, table
    catalog.drop_table(name)


def test_bronze_readings_is_partitioned_by_event_day(stack, stack_settings, credentials):
    table = iceberg_catalog(stack_settings, credentials, s3_key="ingest").load_table(READINGS)
    assert [(f.name, str(f.transform)) for f in table.spec().fields] == [("ts_day", "day")]
    assert [f.source_id for f in table.sort_order().fields] == [1, 5]
    assert table.properties["commit.retry.num-retries"] == "0"


def test_an_added_optional_field_keeps_old_writers_working(stack_settings, streaming_table):
    _, name, table = streaming_table
    builder = ReadingsBuilder()
    for seq in (1, 2):
        builder.add_message(good_message(seq), Source("kafka", "evolve", 0, seq))
    old_rows = builder.readings_table()
    assert old_rows.schema == READINGS_ARROW
    table.append(old_rows)

    cursor = trino_connection(stack_settings).cursor()
    add_optional_field(cursor, name, "firmware", "varchar", "Firmware version, if known")
    table.refresh()
    table.append(old_rows)  # a writer built against the old schema

    with pytest.raises(ConfigError, match="already has a column 'firmware'"):
        add_optional_field(cursor, name, "firmware", "varchar", "again")
    cursor.execute(f"select count(*), count(firmware) from lake.{name}")
    assert cursor.fetchall() == [[4, 0]]
    assert isinstance(table.scan().to_arrow().schema.field("firmware").type, pa.DataType)


def test_a_failed_commit_cleans_up_without_leaving_a_directory_marker(
    stack_settings, credentials, streaming_table
):
    """A writer that loses a commit race deletes the manifests it wrote for it; that
    delete leaves no `…/metadata/` marker object (pyarrow's own delete writes one for
    the parent, and a marker once broke backups)."""
    catalog, name, table = streaming_table
    builder = ReadingsBuilder()
    builder.add_message(good_message(1), Source("kafka", "markers", 0, 1))
    rows = builder.readings_table()
    table.append(rows)
    stale = catalog.load_table(name)
    table.append(rows)
    with pytest.raises(CommitFailedException):
        stale.append(rows)  # built on the snapshot before the second append

    bucket, _, prefix = table.location().removeprefix("s3://").partition("/")
    client = s3_client(stack_settings, credentials, "reader")
    keys = [
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{prefix}/"
        )
        for item in page.get("Contents", [])
    ]
    assert [k for k in keys if k.endswith("/")] == []
    # What the lost attempt wrote is gone: the two winners' manifest lists remain.
    assert len([k for k in keys if "/snap-" in k]) == 2
    cursor = trino_connection(stack_settings).cursor()
    cursor.execute(f"select count(*) from lake.{name}")
    assert cursor.fetchall() == [[2]]
