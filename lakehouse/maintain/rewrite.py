"""Compaction of tables that writers commit to every few seconds (bronze).

Nessie keeps one snapshot in a table's metadata, so an engine that validates a rewrite
by walking the snapshots committed since it started (Trino's `optimize`) fails as soon
as a consumer commits meanwhile. Here a rewrite is checked the only way that matters:
every file it replaces is still in the table. The small files of a partition are read,
sorted by the table's sort order, written as one file (or a few) and swapped in one
commit; when a consumer committed first, the same swap is committed again on top of
it, with no data rewritten. Table properties, where the Kafka offsets live, are never
touched.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pyiceberg.exceptions import CommitFailedException

from lakehouse.config import TablePolicy
from lakehouse.maintain.compact import FileStats, TableResult

if TYPE_CHECKING:
    from pyiceberg.table import FileScanTask, Table

log = logging.getLogger(__name__)

MAX_COMMIT_ATTEMPTS = 30
# A batch of small files rewritten in one commit reads at most this many bytes.
BATCH_BYTES_FACTOR = 4
# ... and at most this many rows: a batch is held in memory decompressed and once more
# sorted, and bronze's Parquet compresses about tenfold, so bytes alone do not bound it.
BATCH_MAX_ROWS = 500_000


class _DataFile(Protocol):
    @property
    def file_size_in_bytes(self) -> int: ...

    @property
    def record_count(self) -> int: ...


class _Task(Protocol):
    @property
    def file(self) -> _DataFile: ...


T = TypeVar("T", bound=_Task)


@dataclass(frozen=True)
class Rewrite:
    """Files replaced and files written by one batch."""

    replaced: int
    written: int


def table_stats(table: Table, small_file_bytes: int) -> FileStats:
    table.refresh()
    snapshot = table.current_snapshot()
    if snapshot is None:
        return FileStats(0, 0, 0, 0)
    tasks = list(table.scan().plan_files())
    return FileStats(
        files=len(tasks),
        bytes=sum(t.file.file_size_in_bytes for t in tasks),
        small_files=sum(1 for t in tasks if t.file.file_size_in_bytes < small_file_bytes),
        manifests=len(snapshot.manifests(table.io)),
    )


def _batches(table: Table, policy: TablePolicy) -> list[list[FileScanTask]]:
    """Small files grouped by partition, in batches of bounded size; only partitions
    with at least `min_small_files` small files, and only files without deletes."""
    by_partition: dict[Any, list[FileScanTask]] = defaultdict(list)
    for task in table.scan().plan_files():
        if task.delete_files or task.file.file_size_in_bytes >= policy.small_file_bytes:
            continue
        by_partition[(task.file.spec_id, repr(task.file.partition))].append(task)
    limit = policy.small_file_bytes * BATCH_BYTES_FACTOR
    batches: list[list[FileScanTask]] = []
    for tasks in by_partition.values():
        if len(tasks) >= policy.min_small_files:
            # Smallest first: the smallest files merge, and a file already near the
            # bounds is left alone rather than rewritten with every pass.
            ordered = sorted(tasks, key=lambda t: (t.file.record_count, t.file.file_path))
            batches += split_batches(ordered, max_bytes=limit, max_rows=BATCH_MAX_ROWS)
    return batches


def split_batches(tasks: list[T], *, max_bytes: int, max_rows: int) -> list[list[T]]:
    """Consecutive runs of `tasks` within both bounds (a file above them goes alone);
    runs of a single file are left out, as rewriting one file alone gains nothing."""
    batches: list[list[T]] = []
    batch: list[T] = []
    size = rows = 0
    for task in tasks:
        if batch and (
            size + task.file.file_size_in_bytes > max_bytes
            or rows + task.file.record_count > max_rows
        ):
            batches.append(batch)
            batch, size, rows = [], 0, 0
        batch.append(task)
        size += task.file.file_size_in_bytes
        rows += task.file.record_count
    batches.append(batch)
    return [b for b in batches if len(b) > 1]


def _sorted(table: Table, data: Any) -> Any:
    order = table.sort_order()
    keys = []
    for field in order.fields:
        name = table.schema().find_column_name(field.source_id)
        if name is not None and str(field.transform) == "identity":
            keys.append((name, "ascending" if str(field.direction) != "desc" else "descending"))
    return data.sort_by(keys) if keys else data


def _rewrite_batch(table: Table, batch: list[FileScanTask]) -> Rewrite:
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files

    data = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(batch)
    data = _sorted(table, data)
    written = list(
        _dataframe_to_data_files(
            table_metadata=table.metadata, df=data, io=table.io, write_uuid=uuid.uuid4()
        )
    )
    replaced = {task.file.file_path for task in batch}
    for attempt in range(1, MAX_COMMIT_ATTEMPTS + 1):
        current = {task.file.file_path: task.file for task in table.scan().plan_files()}
        if not replaced <= current.keys():
            # Another compaction replaced some of them: ours is moot (GC takes its files).
            log.info("%s: files changed under a rewrite; skipped", table.name())
            return Rewrite(0, 0)
        try:
            with (
                table.transaction() as tx,
                tx.update_snapshot(
                    snapshot_properties={"lakehouse.maintenance": "compaction"}
                ).overwrite() as overwrite,
            ):
                for path in sorted(replaced):
                    overwrite.delete_data_file(current[path])
                for data_file in written:
                    overwrite.append_data_file(data_file)
            return Rewrite(len(replaced), len(written))
        except CommitFailedException:
            # A writer committed first: swap again on top of its commit.
            time.sleep(min(0.01 * attempt, 0.5))
            table.refresh()
    log.warning("%s: gave up a rewrite after %d conflicts", table.name(), MAX_COMMIT_ATTEMPTS)
    return Rewrite(0, 0)


def compact_streaming_table(table: Table, name: str, policy: TablePolicy) -> TableResult:
    """Rewrite the small files of every partition that has enough of them."""
    started = time.monotonic()
    before = table_stats(table, policy.small_file_bytes)
    replaced = 0
    for batch in _batches(table, policy):
        replaced += _rewrite_batch(table, batch).replaced
    after = table_stats(table, policy.small_file_bytes) if replaced else before
    result = TableResult(
        table=name,
        action="compacted" if replaced else "none",
        before=before,
        after=after,
        seconds=time.monotonic() - started,
    )
    if replaced:
        log.info(
            "%s: compacted %d small files; %d → %d data files (%d → %d bytes) in %.1f s",
            name, replaced, before.files, after.files, before.bytes, after.bytes,
            result.seconds,
        )  # fmt: skip
    return result
