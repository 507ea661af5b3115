"""Batch files (CSV, JSONL, Parquet) into bronze, idempotent by content hash.

Each row names its `device_id` and `tenant` (files come from trusted operators, not
devices). The file's SHA-256 becomes the rows' `batch_id` and is recorded in the
snapshot summary; a table that already holds rows of that hash is skipped, so the
same content ingested twice, under any name, lands once.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.exceptions import CommitFailedException

from ingest.readings import Limits, ReadingsBuilder, Rejected, Source
from lakehouse.contracts import READINGS, REJECTED, ensure_bronze_tables
from lakehouse.digest import file_sha256
from lakehouse.errors import IngestError, InputFileError
from lakehouse.retry import Outage, retry_transient

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

log = logging.getLogger(__name__)

FORMATS = ("csv", "jsonl", "parquet")
# Commit conflicts (other writers committing first) tolerated before giving up.
MAX_CONFLICTS = 50


@dataclass(frozen=True)
class FileResult:
    path: Path
    sha256: str
    readings: int
    rejected: int
    skipped: bool


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("jsonl", "ndjson", "json"):
        return "jsonl"
    if suffix in ("csv", "parquet"):
        return suffix
    raise InputFileError(
        f"cannot tell the format of {path.name}",
        fix="name it .csv, .jsonl or .parquet, or pass --format",
    )


def ingest_file(
    catalog: Catalog,
    path: Path,
    *,
    file_format: str | None = None,
    limits: Limits | None = None,
    progress: Callable[[int], None] | None = None,
) -> FileResult:
    """Validate one file and append it to bronze (rejects with file and line number)."""
    if not path.is_file():
        raise InputFileError(f"{path} does not exist or is not a file")
    fmt = file_format or detect_format(path)
    sha = file_sha256(path)
    outage = Outage("the bronze catalog (Nessie, MinIO)", log)

    def open_tables() -> tuple[Table, Table, bool, bool]:
        ensure_bronze_tables(catalog)
        readings_table = catalog.load_table(READINGS)
        rejected_table = catalog.load_table(REJECTED)
        return (readings_table, rejected_table,
                _holds_batch(readings_table, sha), _holds_batch(rejected_table, sha))  # fmt: skip

    readings_table, rejected_table, have_readings, have_rejected = retry_transient(
        open_tables, outage=outage
    )
    if have_readings and have_rejected:
        return FileResult(path, sha, 0, 0, skipped=True)

    builder = ReadingsBuilder(limits or Limits())
    rows = _ROW_READERS[fmt](path)
    for line, row in rows:
        source = Source("file", batch_id=sha, file=path.name, line=line)
        if isinstance(row, Rejected):
            builder.reject(None, row, source)
        elif isinstance(row, bytes):
            builder.add_message(row, source)
        else:
            _add_row(builder, row, source)
        if progress is not None:
            progress(1)
    summary = {"lakehouse.file.sha256": sha, "lakehouse.file.name": path.name}
    readings = builder.readings_table()
    rejected = builder.rejected_table()
    # Each table is made idempotent on its own, so a crash between the two commits
    # is repaired by ingesting the file again.
    add_readings = readings.num_rows > 0 and not have_readings
    add_rejected = rejected.num_rows > 0 and not have_rejected
    if add_readings:
        sorted_readings = readings.sort_by([("device_id", "ascending"), ("ts", "ascending")])
        add_readings = _append_once(readings_table, sorted_readings, sha, summary, outage)
    if add_rejected:
        add_rejected = _append_once(rejected_table, rejected, sha, summary, outage)
    return FileResult(
        path,
        sha,
        readings.num_rows if add_readings else 0,
        rejected.num_rows if add_rejected else 0,
        skipped=not (add_readings or add_rejected),
    )


def _append_once(
    table: Table, data: pa.Table, sha: str, summary: dict[str, str], outage: Outage
) -> bool:
    """Append unless the table holds the file already; an outage or conflict is retried.

    Each attempt reads the table afresh, so an append whose commit reached the catalog
    before the connection broke is not repeated. A commit conflict means another writer
    committed first (a consumer, or a concurrent ingest of this very file): the table is
    read again, and the file lands only if it is still not there.
    """

    def attempt() -> bool | None:
        table.refresh()
        if _holds_batch(table, sha):
            return False
        try:
            table.append(data, snapshot_properties=summary)
        except CommitFailedException as exc:
            log.info("commit conflict on %s; reading it again: %s", ".".join(table.name()), exc)
            return None
        return True

    for conflicts in range(MAX_CONFLICTS):
        appended = retry_transient(attempt, outage=outage)
        if appended is not None:
            return appended
        time.sleep(min(0.05 * (conflicts + 1), 1.0))
    raise IngestError(
        f"gave up appending to {'.'.join(table.name())} after {MAX_CONFLICTS} conflicts",
        fix="another writer commits to the table continuously; ingest the file again later",
    )


def _holds_batch(table: Table, sha: str) -> bool:
    # The hash is hex, so it is safe inside the filter expression.
    scan = table.scan(row_filter=f"batch_id == '{sha}'", selected_fields=("batch_id",), limit=1)
    return bool(scan.to_arrow().num_rows)


def _add_row(builder: ReadingsBuilder, row: dict[str, Any], source: Source) -> None:
    raw = orjson.dumps(row, default=str)
    try:
        identity = builder.identity(row)
    except Rejected as exc:
        builder.reject(raw, exc, source)
        return
    builder.add_reading(row, identity, source)


RowReader = Callable[[Path], Iterator[tuple[int, "dict[str, Any] | bytes | Rejected"]]]


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | bytes | Rejected]]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            stripped = line.strip()
            if stripped:
                yield number, stripped


_CSV_INT = ("seq",)
_CSV_FLOAT = ("value",)


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | bytes | Rejected]]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{path.name} is not UTF-8: {exc}") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or not {"seq", "ts", "metric", "value"} <= set(reader.fieldnames):
        raise InputFileError(
            f"{path.name}: the header must name device_id, tenant, seq, ts, metric, value",
            fix="add a header row with those columns (site, unit, attrs are optional)",
        )
    for row in reader:
        line = reader.line_num
        if None in row or any(v is None for v in row.values()):
            yield (
                line,
                Rejected(
                    "wrong_type", f"row has {len(row)} fields, header has {len(reader.fieldnames)}"
                ),
            )
            continue
        try:
            yield line, _typed_csv_row(row)
        except Rejected as exc:
            yield line, exc


def _typed_csv_row(row: dict[str, str]) -> dict[str, Any]:
    typed: dict[str, Any] = {k: (v if v != "" else None) for k, v in row.items()}
    for name in _CSV_INT:
        if typed.get(name) is not None:
            try:
                typed[name] = int(typed[name])
            except ValueError:
                raise Rejected("wrong_type", f"{name} {typed[name]!r} is not an integer") from None
    for name in _CSV_FLOAT:
        if typed.get(name) is not None:
            try:
                typed[name] = float(typed[name])
            except ValueError:
                raise Rejected("wrong_type", f"{name} {typed[name]!r} is not a number") from None
    if typed.get("attrs") is not None:
        try:
            typed["attrs"] = orjson.loads(typed["attrs"])
        except orjson.JSONDecodeError:
            raise Rejected("wrong_type", "attrs must be a JSON object") from None
    return typed


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | bytes | Rejected]]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputFileError(f"{path.name} is not a readable Parquet file: {exc}") from exc
    number = 0
    for batch in parquet.iter_batches(batch_size=65_536):
        for row in batch.to_pylist():
            number += 1
            ts = row.get("ts")
            if hasattr(ts, "isoformat"):
                row["ts"] = ts.isoformat()
            if isinstance(row.get("attrs"), list):
                row["attrs"] = dict(row["attrs"])
            yield number, row


_ROW_READERS: dict[str, RowReader] = {
    "csv": _csv_rows,
    "jsonl": _jsonl_rows,
    "parquet": _parquet_rows,
}
