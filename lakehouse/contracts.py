"""Table contracts as code: schemas, partitioning and sort order of the bronze tables.

Schema evolution policy
-----------------------
* Bronze schemas only grow. A new field is added as *optional* (never required) with
  `add_optional_field()`, so every file already written stays readable and writers
  built against the older schema keep committing (the new column is null in their rows).
* A reading may carry fields the contract does not know: they are ignored on ingest
  (the raw payload of each rejected record is kept, so nothing is silently lost there).
* A known field with the wrong type is not coerced: the record goes to
  `bronze.readings_rejected` with the reason `wrong_type:<field>`.
* Renaming, narrowing or dropping a column is never done in place; it needs a new
  table version and a migration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyiceberg.exceptions import TableAlreadyExistsError
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import (
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    NestedField,
    StringType,
    TimestamptzType,
)

from lakehouse.errors import ConfigError

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

# Table property (one per topic) holding the next Kafka offset of each partition,
# committed by the consumers in the same snapshot as the rows they consumed.
KAFKA_OFFSETS_PROPERTY_PREFIX = "lakehouse.kafka.offsets."
# Table property (one per topic): offset ranges that expired from Kafka (retention)
# before the consumer read them, recorded in the commit that skipped them.
KAFKA_GAPS_PROPERTY_PREFIX = "lakehouse.kafka.gaps."

# The pipeline's own work tables (lakehouse.transform.internal_tables), kept from
# analysts; and where lakehouses made before kept them.
INTERNAL_SCHEMA = "internal"
LEGACY_SCHEMA = "silver"

READINGS = "bronze.readings"
REJECTED = "bronze.readings_rejected"

# Keeps commit cost flat as a streaming writer adds thousands of snapshots: manifests
# are merged. Old metadata files are cleaned up on commit by catalogs that keep a
# metadata log; Nessie keeps none, so the maintenance garbage collector removes them.
STREAMING_TABLE_PROPERTIES = {
    "format-version": "2",
    "write.parquet.compression-codec": "zstd",
    "commit.manifest-merge.enabled": "true",
    "commit.manifest.min-count-to-merge": "50",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
    "history.expire.max-snapshot-age-ms": str(6 * 3600 * 1000),
    "history.expire.min-snapshots-to-keep": "50",
    # Writers that commit offsets re-check them before every attempt themselves; a
    # client-side automatic retry would re-apply stale offsets and bypass that check.
    "commit.retry.num-retries": "0",
}

READINGS_SCHEMA = Schema(
    NestedField(1, "device_id", StringType(), required=True, doc="Device, from its token"),
    NestedField(2, "tenant", StringType(), required=True, doc="Tenant, from the token"),
    NestedField(3, "site", StringType(), required=False, doc="Site of the device"),
    NestedField(4, "seq", LongType(), required=True, doc="Per-device sequence number"),
    NestedField(5, "ts", TimestamptzType(), required=True, doc="Event time (UTC)"),
    NestedField(6, "metric", StringType(), required=True, doc="What was measured"),
    NestedField(7, "value", DoubleType(), required=True, doc="Finite measured value"),
    NestedField(8, "unit", StringType(), required=False, doc="Unit of the value"),
    NestedField(
        9,
        "attrs",
        MapType(10, StringType(), 11, StringType(), value_required=False),
        required=False,
        doc="Free-form string attributes",
    ),
    NestedField(12, "ingested_at", TimestamptzType(), required=True, doc="When bronze got it"),
    NestedField(13, "source", StringType(), required=True, doc="kafka, upload or file"),
    NestedField(14, "source_topic", StringType(), required=False),
    NestedField(15, "source_partition", IntegerType(), required=False),
    NestedField(16, "source_offset", LongType(), required=False),
    NestedField(17, "batch_id", StringType(), required=False, doc="Upload batch or file hash"),
    NestedField(18, "source_file", StringType(), required=False),
    NestedField(19, "source_line", LongType(), required=False),
)

READINGS_SPEC = PartitionSpec(
    PartitionField(source_id=5, field_id=1000, transform=DayTransform(), name="ts_day")
)
READINGS_SORT = SortOrder(
    SortField(source_id=1, transform=IdentityTransform()),
    SortField(source_id=5, transform=IdentityTransform()),
)

REJECTED_SCHEMA = Schema(
    NestedField(1, "raw", StringType(), required=False, doc="Payload as received (UTF-8 or hex)"),
    NestedField(2, "raw_encoding", StringType(), required=True, doc="utf8 or hex"),
    NestedField(3, "reason", StringType(), required=True, doc="Machine-readable reason code"),
    NestedField(4, "detail", StringType(), required=False, doc="Human-readable explanation"),
    NestedField(5, "device_id", StringType(), required=False),
    NestedField(6, "tenant", StringType(), required=False),
    NestedField(7, "ingested_at", TimestamptzType(), required=True),
    NestedField(8, "source", StringType(), required=True),
    NestedField(9, "source_topic", StringType(), required=False),
    NestedField(10, "source_partition", IntegerType(), required=False),
    NestedField(11, "source_offset", LongType(), required=False),
    NestedField(12, "batch_id", StringType(), required=False),
    NestedField(13, "source_file", StringType(), required=False),
    NestedField(14, "source_line", LongType(), required=False),
    NestedField(15, "item_index", IntegerType(), required=False, doc="Index inside a batch"),
)

REJECTED_SPEC = PartitionSpec(
    PartitionField(source_id=7, field_id=1000, transform=DayTransform(), name="ingested_day")
)


def add_optional_field(cursor: Any, table: str, name: str, sql_type: str, comment: str) -> None:
    """The one permitted schema change: a new optional column, added through Trino.

    Trino's Iceberg client sends the schema update in the form Nessie 0.99 accepts
    (pyiceberg 0.12 omits the `last-column-id` it requires).
    """
    if not all(part.isidentifier() for part in (*table.split("."), name)):
        raise ConfigError(f"not a plain identifier: {table}.{name}")
    schema, _, table_name = table.partition(".")
    cursor.execute(
        "select column_name from lake.information_schema.columns "
        "where table_schema = ? and table_name = ? and column_name = ?",
        (schema, table_name, name),
    )
    if cursor.fetchall():
        raise ConfigError(f"{table} already has a column {name!r}")
    quoted = comment.replace("'", "''")
    # Identifiers are checked above; DDL takes no bind parameters.
    cursor.execute(f"alter table lake.{table} add column {name} {sql_type} comment '{quoted}'")
    cursor.fetchall()


def ensure_bronze_tables(
    catalog: Catalog, readings: str = READINGS, rejected: str = REJECTED
) -> list[str]:
    """Create the bronze tables that do not exist yet; returns the names created."""
    created = []
    for name, schema, spec, sort in (
        (readings, READINGS_SCHEMA, READINGS_SPEC, READINGS_SORT),
        (rejected, REJECTED_SCHEMA, REJECTED_SPEC, SortOrder()),
    ):
        if catalog.table_exists(name):
            _reconcile_properties(catalog.load_table(name))
            continue
        try:
            table = catalog.create_table(
                name,
                schema=schema,
                partition_spec=spec,
                sort_order=sort,
                properties=STREAMING_TABLE_PROPERTIES,
            )
        except TableAlreadyExistsError:
            continue  # another process created it a moment ago
        _seed_snapshot(table)
        created.append(name)
    return created


def _reconcile_properties(table: Table) -> None:
    """Bring an existing table's properties up to the contract (never downgrades format)."""
    wanted = {k: v for k, v in STREAMING_TABLE_PROPERTIES.items() if k != "format-version"}
    stale = {k: v for k, v in wanted.items() if table.properties.get(k) != v}
    if stale:
        with table.transaction() as tx:
            tx.set_properties(stale)


def _seed_snapshot(table: Table) -> None:
    """Give a new table an empty first snapshot.

    Concurrent writers then race on a snapshot id that exists, which the catalog checks;
    the very first commit to a table without snapshots is not protected the same way.
    """
    table.append(schema_to_empty_arrow(table.schema()))


def schema_to_empty_arrow(schema: Schema):  # type: ignore[no-untyped-def]
    from pyiceberg.io.pyarrow import schema_to_pyarrow

    return schema_to_pyarrow(schema).empty_table()
