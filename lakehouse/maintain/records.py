"""Maintenance records and lock, in PostgreSQL (schema `maintenance`).

One row per pass in `maintenance.runs`, one per table it looked at in
`maintenance.tables` (files and bytes before and after). Analysts read them through
Trino's `pg` catalog. The lock is a session advisory lock, as the transform's is: a
pass (or a backup) holds it while it runs, and a crashed holder releases it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from lakehouse.ddl import apply_when_changed
from lakehouse.errors import MaintenanceLockedError

if TYPE_CHECKING:
    from lakehouse.maintain.report import MaintenanceReport

# An arbitrary constant naming the maintenance lock among advisory locks.
LOCK_KEY = 0x6D61696E7461696E

SCHEMA_SQL = """
create schema if not exists maintenance;
create table if not exists maintenance.runs (
    run_id text primary key,
    started_at timestamptz not null,
    finished_at timestamptz not null,
    outcome text not null check (outcome in ('done', 'error')),
    seconds double precision not null,
    tables_compacted integer not null,
    gc_listed_files bigint,
    gc_deleted_files bigint,
    gc_deleted_bytes bigint,
    gc_live_files bigint,
    branches_deleted text[] not null,
    receipts_deleted bigint,
    warnings text[] not null,
    error text
);
create table if not exists maintenance.tables (
    run_id text not null references maintenance.runs on delete cascade,
    table_name text not null,
    action text not null,
    files_before bigint not null,
    bytes_before bigint not null,
    manifests_before bigint not null,
    files_after bigint not null,
    bytes_after bigint not null,
    manifests_after bigint not null,
    seconds double precision not null,
    primary key (run_id, table_name)
);
alter table maintenance.runs add column if not exists gc_history_from timestamptz;
do $$ begin
    if exists (select from pg_roles where rolname = 'trino_reader') then
        grant usage on schema maintenance to trino_reader;
        grant select on maintenance.runs, maintenance.tables to trino_reader;
    end if;
end $$;
"""


def ensure_schema(conn: Any) -> None:
    with conn.transaction():
        apply_when_changed(conn, "maintenance", [SCHEMA_SQL])


def acquire_lock(conn: Any, *, holder: str = "another maintenance pass") -> None:
    """Hold the maintenance lock for as long as `conn` stays open."""
    row = conn.execute("select pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
    if not row or not row[0]:
        raise MaintenanceLockedError(
            f"{holder} or a backup is running",
            fix="wait for it to finish; `lakehouse maintain history` lists the passes",
        )


def collected_before(conn: Any) -> datetime | None:
    """The latest start of history a finished collection kept: what came before it is
    deleted, whatever retention applies now."""
    row = conn.execute(
        "select max(gc_history_from) from maintenance.runs where outcome = 'done'"
    ).fetchone()
    return row[0] if row else None


def record(conn: Any, report: MaintenanceReport) -> None:
    gc = report.gc
    with conn.transaction():
        conn.execute(
            "insert into maintenance.runs (run_id, started_at, finished_at, outcome, seconds, "
            "tables_compacted, gc_listed_files, gc_deleted_files, gc_deleted_bytes, "
            "gc_live_files, branches_deleted, receipts_deleted, warnings, error, "
            "gc_history_from) "
            "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                report.run_id, report.started_at, report.finished_at, report.outcome,
                report.seconds, sum(1 for t in report.tables if t.action != "none"),
                gc.listed_files if gc else None, gc.deleted_files if gc else None,
                gc.deleted_bytes if gc else None, gc.live_files if gc else None,
                report.branches_deleted, report.receipts_deleted, report.warnings,
                report.error, report.gc_history_from if gc else None,
            ),
        )  # fmt: skip
        with conn.cursor() as cur:
            cur.executemany(
                "insert into maintenance.tables (run_id, table_name, action, files_before, "
                "bytes_before, manifests_before, files_after, bytes_after, manifests_after, "
                "seconds) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        report.run_id, t.table, t.action, t.before.files, t.before.bytes,
                        t.before.manifests, t.after.files, t.after.bytes, t.after.manifests,
                        t.seconds,
                    )
                    for t in report.tables
                ],
            )  # fmt: skip


def recent(conn: Any, limit: int = 20) -> list[dict[str, Any]]:
    rows = conn.execute(
        "select run_id, started_at, outcome, seconds, tables_compacted, gc_deleted_files, "
        "gc_deleted_bytes, branches_deleted, receipts_deleted, warnings, error "
        "from maintenance.runs order by started_at desc limit %s",
        (limit,),
    )
    names = [column.name for column in rows.description]
    return [dict(zip(names, row, strict=True)) for row in rows.fetchall()]


def as_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, default=str, indent=1)
