"""File ingest: validated rows land once per content; malformed rows keep their line."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.files import file_sha256, ingest_file
from lakehouse.clients import iceberg_catalog, trino_connection
from tests.integration.conftest import assert_accounted

pytestmark = pytest.mark.integration

HEADER = "device_id,tenant,site,seq,ts,metric,value,unit\n"


def _rows_for(settings, sha: str) -> tuple[int, int]:
    cursor = trino_connection(settings).cursor()
    cursor.execute(f"select count(*) from lake.bronze.readings where batch_id = '{sha}'")
    readings = cursor.fetchall()[0][0]
    cursor.execute(f"select count(*) from lake.bronze.readings_rejected where batch_id = '{sha}'")
    return readings, cursor.fetchall()[0][0]


def test_same_jsonl_twice_lands_once(stack_settings, credentials, tmp_path, unique):
    path = tmp_path / f"batch-{unique}.jsonl"
    lines = [
        orjson.dumps({"device_id": f"file-{unique}", "tenant": "tenant-01", "seq": i,
                      "ts": "2026-11-20T10:00:00Z", "metric": "temperature", "value": i / 2})
        for i in range(1, 501)
    ]  # fmt: skip
    path.write_bytes(b"\n".join(lines) + b"\n")
    catalog = iceberg_catalog(stack_settings, credentials, s3_key="ingest")

    first = ingest_file(catalog, path)
    assert (first.readings, first.rejected, first.skipped) == (500, 0, False)
    second = ingest_file(catalog, path)
    assert second.skipped
    renamed = tmp_path / "same-content-other-name.jsonl"
    shutil.copy(path, renamed)
    assert ingest_file(catalog, renamed).skipped
    assert _rows_for(stack_settings, file_sha256(path)) == (500, 0)
    snapshot = catalog.load_table("bronze.readings").current_snapshot()
    assert snapshot.summary.additional_properties.get("lakehouse.file.sha256") in (
        file_sha256(path),
        None,  # another writer may have committed since
    )


def test_one_file_ingested_twice_at_once_while_another_writer_commits_lands_once(
    stack_settings, credentials, tmp_path, unique
):
    """Two ingests of the same file race each other and a writer committing to bronze
    every second (as a busy consumer does): both ingests finish, the file lands once."""
    path = tmp_path / f"race-{unique}.jsonl"
    path.write_bytes(b"".join(
        orjson.dumps({"device_id": f"race-{unique}", "tenant": "tenant-01", "seq": i,
                      "ts": "2026-11-20T10:00:00Z", "metric": "temperature", "value": 20.0})
        + b"\n" for i in range(1, 201)
    ))  # fmt: skip
    other = tmp_path / "other"
    other.mkdir()
    stop = threading.Event()
    landed: list[int] = []

    def keep_committing() -> None:
        catalog = iceberg_catalog(stack_settings, credentials, s3_key="ingest")
        n = 0
        while not stop.is_set():
            n += 1
            extra = other / f"other-{unique}-{n}.jsonl"
            extra.write_bytes(orjson.dumps({
                "device_id": f"other-{unique}", "tenant": "tenant-01", "seq": n,
                "ts": "2026-11-20T10:00:00Z", "metric": "temperature", "value": 1.0,
            }) + b"\n")  # fmt: skip
            landed.append(ingest_file(catalog, extra).readings)
            stop.wait(1.0)  # a consumer commits every few seconds

    def ingest() -> object:
        return ingest_file(iceberg_catalog(stack_settings, credentials, s3_key="ingest"), path)

    writer = threading.Thread(target=keep_committing)
    writer.start()
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(lambda _: ingest(), range(2)))
    finally:
        stop.set()
        writer.join(120)
    assert sorted(r.skipped for r in results) == [False, True]
    assert _rows_for(stack_settings, file_sha256(path)) == (200, 0)
    assert len(landed) >= 1 and set(landed) == {1}
    counts = assert_accounted(stack_settings, credentials, f"race-{unique}")
    assert (counts.bronze, counts.receipted) == (200, 0)


def test_malformed_csv_row_is_rejected_with_its_line_number(stack_settings, tmp_path, unique):
    device = f"csv-{unique}"
    path = tmp_path / f"readings-{unique}.csv"
    path.write_text(
        HEADER
        + f"{device},tenant-01,site-001,1,2026-11-20T10:00:00Z,temperature,20.5,C\n"
        + f"{device},tenant-01,site-001,2,2026-11-20T10:00:10Z,temperature,not-a-number,C\n"
        + f"{device},tenant-01,site-001,3,2026-11-20T10:00:20Z,temperature\n"
        + f"{device},tenant-01,site-001,4,2026-11-20T10:00:30Z,temperature,21.5,C\n"
        + f"{device},tenant-01,site-001,5,not-a-time,temperature,22.5,C\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "lakehouse", "ingest", "file", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ingested" in result.stdout

    cursor = trino_connection(stack_settings).cursor()
    cursor.execute(
        "select seq, source_file, source_line from lake.bronze.readings "
        f"where device_id = '{device}' order by seq"
    )
    assert cursor.fetchall() == [[1, path.name, 2], [4, path.name, 5]]
    cursor.execute(
        "select source_line, reason from lake.bronze.readings_rejected "
        f"where source_file = '{path.name}' order by source_line"
    )
    assert cursor.fetchall() == [[3, "wrong_type"], [4, "wrong_type"], [6, "invalid_timestamp"]]

    again = subprocess.run(
        [sys.executable, "-m", "lakehouse", "ingest", "file", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert "already ingested" in again.stdout
    assert _rows_for(stack_settings, file_sha256(path)) == (2, 3)


def test_parquet_file_lands_with_typed_columns(stack_settings, credentials, tmp_path, unique):
    device = f"pq-{unique}"
    table = pa.table(
        {
            "device_id": [device] * 3,
            "tenant": ["tenant-02"] * 3,
            "seq": pa.array([1, 2, 3], pa.int64()),
            "ts": pa.array(
                [1_763_632_800_000_000, 1_763_632_810_000_000, 1_763_632_820_000_000],
                pa.timestamp("us", tz="UTC"),
            ),
            "metric": ["pressure"] * 3,
            "value": [1013.0, float("nan"), 1012.5],
        }
    )
    path = tmp_path / f"{device}.parquet"
    pq.write_table(table, path)
    result = ingest_file(iceberg_catalog(stack_settings, credentials, s3_key="ingest"), path)
    assert (result.readings, result.rejected) == (2, 1)
    cursor = trino_connection(stack_settings).cursor()
    cursor.execute(
        f"select seq, value from lake.bronze.readings where device_id = '{device}' order by seq"
    )
    assert cursor.fetchall() == [[1, 1013.0], [3, 1012.5]]
    cursor.execute(
        "select source_line, reason from lake.bronze.readings_rejected "
        f"where source_file = '{path.name}'"
    )
    assert cursor.fetchall() == [[2, "non_finite_value"]]
