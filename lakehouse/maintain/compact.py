"""Compaction through Trino of the tables transform runs build (silver and up): small
data files rewritten into larger ones in the table's sort order (`optimize`), manifests
rewritten when there are many (`optimize_manifests`).

Trino validates a rewrite against the snapshots committed since it started, which
Nessie's one-snapshot metadata does not keep: a table must not change meanwhile. The
runner holds the transform lock around these (bronze is compacted by
lakehouse.maintain.rewrite instead, as consumers keep committing).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from lakehouse.config import Settings, TablePolicy
from lakehouse.names import checked

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileStats:
    files: int
    bytes: int
    small_files: int
    manifests: int


@dataclass(frozen=True)
class TableResult:
    table: str
    action: str  # "compacted", "manifests", "compacted+manifests" or "none"
    before: FileStats
    after: FileStats
    seconds: float


def policy_for(settings: Settings, schema: str, table: str) -> TablePolicy:
    """The table's own policy, else its layer's (the namespace's suffix), else defaults."""
    policies = settings.maintain.policies
    own = policies.get(f"{schema}.{table}")
    if own is not None:
        return own
    for layer, policy in policies.items():
        if "." not in layer and (schema == layer or schema.endswith(f"_{layer}")):
            return policy
    return TablePolicy()


def lake_tables(cursor: Any, settings: Settings, schema_prefix: str) -> list[tuple[str, str]]:
    """(schema, table) of every Iceberg table of the lake's layers under the prefix."""
    layers = {f"{schema_prefix}{layer}" for layer in settings.namespaces}
    cursor.execute(
        "select table_schema, table_name from information_schema.tables "
        "where table_type = 'BASE TABLE' order by 1, 2"
    )
    return [(schema, table) for schema, table in cursor.fetchall() if schema in layers]


def file_stats(cursor: Any, schema: str, table: str, small_file_bytes: int) -> FileStats:
    cursor.execute(
        "select count(*), coalesce(sum(file_size_in_bytes), 0), "  # noqa: S608 - checked names
        f"count_if(file_size_in_bytes < {int(small_file_bytes)}) "
        f"from {_quoted(schema, table, '$files')} where content = 0"
    )
    files, size, small = cursor.fetchone()
    cursor.execute(f"select count(*) from {_quoted(schema, table, '$manifests')}")  # noqa: S608
    (manifests,) = cursor.fetchone()
    return FileStats(int(files), int(size), int(small), int(manifests))


def compact_table(cursor: Any, schema: str, table: str, policy: TablePolicy) -> TableResult:
    """Compact one table if its policy says it needs it; stats before and after."""
    started = time.monotonic()
    name = _quoted(schema, table)
    before = file_stats(cursor, schema, table, policy.small_file_bytes)
    actions: list[str] = []
    if before.small_files >= policy.min_small_files:
        threshold = f"{max(policy.small_file_bytes // 1024, 1)}kB"
        cursor.execute(f"alter table {name} execute optimize(file_size_threshold => '{threshold}')")
        cursor.fetchall()
        actions.append("compacted")
    manifests = file_stats(cursor, schema, table, policy.small_file_bytes) if actions else before
    if manifests.manifests > policy.max_manifests:
        cursor.execute(f"alter table {name} execute optimize_manifests")
        cursor.fetchall()
        actions.append("manifests")
    after = file_stats(cursor, schema, table, policy.small_file_bytes) if actions else before
    result = TableResult(
        table=f"{schema}.{table}",
        action="+".join(actions) or "none",
        before=before,
        after=after,
        seconds=time.monotonic() - started,
    )
    if actions:
        log.info(
            "%s: %s, %d → %d data files (%d → %d bytes), %d → %d manifests in %.1f s",
            result.table, result.action, before.files, after.files, before.bytes,
            after.bytes, before.manifests, after.manifests, result.seconds,
        )  # fmt: skip
    return result


def _quoted(schema: str, table: str, suffix: str = "") -> str:
    return f'"{checked("namespace", schema)}"."{checked("table", table)}{suffix}"'
