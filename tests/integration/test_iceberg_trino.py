"""pyiceberg and Trino share one catalog: what one writes, the other reads exactly."""

from __future__ import annotations

import pyarrow as pa
import pytest

from lakehouse.clients import iceberg_catalog, trino_connection

pytestmark = pytest.mark.integration

ROWS = 10_000


def _readings(rows: int) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "device": pa.array([f"dev-{i % 37:03d}" for i in range(rows)], pa.string()),
            "value": pa.array([i * 0.25 for i in range(rows)], pa.float64()),
        }
    )


def test_pyiceberg_append_is_counted_exactly_by_trino(stack, stack_settings, credentials, unique):
    catalog = iceberg_catalog(stack_settings, credentials, s3_key="ingest")
    name = f"bronze.smoke_{unique}"
    table = catalog.create_table(name, schema=_readings(0).schema)
    try:
        table.append(_readings(ROWS))
        cursor = trino_connection(stack_settings).cursor()
        cursor.execute(
            f"select count(*), sum(id), sum(value), count(distinct device) from lake.{name}"
        )
        assert cursor.fetchall() == [
            [ROWS, ROWS * (ROWS - 1) // 2, 0.25 * ROWS * (ROWS - 1) / 2, 37]
        ]
    finally:
        catalog.drop_table(name)


def test_trino_ctas_reads_back_identically_in_pyiceberg(stack, stack_settings, credentials, unique):
    name = f"bronze.ctas_{unique}"
    cursor = trino_connection(stack_settings).cursor()
    cursor.execute(
        f"""create table lake.{name} as
        select cast(n as bigint) as id,
               'dev-' || lpad(cast(n % 37 as varchar), 3, '0') as device,
               n * 0.25e0 as value
        from unnest(sequence(0, {ROWS - 1})) as t(n)"""
    )
    assert cursor.fetchall() == [[ROWS]]
    catalog = iceberg_catalog(stack_settings, credentials, s3_key="ingest")
    try:
        read = catalog.load_table(name).scan().to_arrow().sort_by("id")
        expected = _readings(ROWS)
        assert read.column_names == expected.column_names
        for column in expected.column_names:
            assert read.column(column).to_pylist() == expected.column(column).to_pylist()
    finally:
        catalog.drop_table(name)
