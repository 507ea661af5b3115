"""Write readings into an isolated set of lakehouse namespaces, as the consumer would.

Rows go through the same builder and the same offset-committing append as the Kafka
consumer, so bronze holds exactly what ingestion would have written, with committed
offsets, without the time a real topic round-trip takes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from ingest.offsets import commit_with_offsets, read_offsets
from ingest.readings import ReadingsBuilder, Source
from lakehouse.contracts import ensure_bronze_tables

LAYERS = ("bronze", "silver", "gold", "platinum", "internal")
Identity = tuple[str, str, str]


def create_environment(catalog: Catalog, prefix: str) -> Table:
    """Namespaces `<prefix>bronze` … `<prefix>internal` and the bronze tables."""
    for layer in LAYERS:
        catalog.create_namespace_if_not_exists(f"{prefix}{layer}")
    ensure_bronze_tables(
        catalog, readings=f"{prefix}bronze.readings", rejected=f"{prefix}bronze.readings_rejected"
    )
    return catalog.load_table(f"{prefix}bronze.readings")


def drop_environment(catalog: Catalog, prefix: str) -> None:
    for layer in LAYERS:
        namespace = f"{prefix}{layer}"
        if not catalog.namespace_exists(namespace):
            continue
        for identifier in catalog.list_tables(namespace):
            catalog.drop_table(identifier)
        catalog.drop_namespace(namespace)


def append_from_kafka(
    table: Table,
    readings: Sequence[tuple[Identity, dict[str, Any]]],
    *,
    partition: int,
    topic: str = "readings",
    per_message: int = 1,
    ingested_at: datetime | None = None,
) -> int:
    """Append readings as messages of `per_message` readings each on one partition,
    committing the partition's next offset with them; returns the rows written."""
    table.refresh()
    start = read_offsets(table, topic).get(partition)
    builder = ReadingsBuilder(now=ingested_at or datetime.now(UTC))
    offset = start or 0
    for index, (identity, reading) in enumerate(readings):
        if index and index % per_message == 0:
            offset += 1
        builder.add_reading(reading, identity, Source("kafka", topic, partition, offset))
    data = builder.readings_table()
    commit_with_offsets(
        table, data, topic=topic, expected={partition: start}, new={partition: offset + 1}
    )
    return int(data.num_rows)


def append_file(
    table: Table, readings: Iterable[tuple[Identity, dict[str, Any]]], sha256: str
) -> int:
    """Append readings as one ingested file with this hash."""
    builder = ReadingsBuilder()
    for line, (identity, reading) in enumerate(readings, start=2):
        builder.add_reading(
            reading, identity, Source("file", batch_id=sha256, file="f.csv", line=line)
        )
    data = builder.readings_table()
    table.append(data)
    return int(data.num_rows)
