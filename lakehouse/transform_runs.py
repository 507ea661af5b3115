"""Run records and the run lock, in PostgreSQL (schema `transform`).

Analysts query the records through Trino (`pg.transform.runs`, `pg.transform.run_nodes`).
The lock is a session advisory lock: it is released when the holding process ends,
however it ends, so a crashed run never blocks the next one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from lakehouse.ddl import apply_when_changed
from lakehouse.errors import TransformLockedError

# An arbitrary constant that names the transform lock among advisory locks.
LOCK_KEY = 0x6C616B65686F7573

SCHEMA_SQL = """
create schema if not exists transform;
create table if not exists transform.runs (
    run_id text primary key,
    started_at timestamptz not null default now(),
    finished_at timestamptz,
    outcome text not null check (
        outcome in ('running', 'published', 'failed', 'up_to_date', 'error', 'abandoned')
    ),
    full_refresh boolean not null,
    branch text,
    trino_catalog text,
    main_before text,
    main_after text,
    bronze_window text,
    bronze_rows bigint,
    silver_rows bigint,
    quarantined_rows bigint,
    seconds double precision,
    failed_nodes text,
    error text
);
create table if not exists transform.run_nodes (
    run_id text not null references transform.runs on delete cascade,
    node text not null,
    resource_type text not null,
    status text not null,
    rows_affected bigint,
    seconds double precision,
    message text,
    primary key (run_id, node)
);
-- What the serving publish made of a published run (lakehouse.serving.publish).
alter table transform.runs add column if not exists serving jsonb;
-- The schema prefix the run wrote under ('' for the lakehouse's own namespaces).
alter table transform.runs add column if not exists schema_prefix text;
-- Where a run's seconds went, by phase (lakehouse.transform.runner.PHASES).
alter table transform.runs add column if not exists phases jsonb;
-- Audits (every test over every row of main) are recorded as runs too.
alter table transform.runs drop constraint if exists runs_outcome_check;
alter table transform.runs add constraint runs_outcome_check check (
    outcome in ('running', 'published', 'failed', 'up_to_date', 'error', 'abandoned',
                'audited', 'audit_failed', 'interrupted')
);
-- Analysts read the run records through Trino's read-only pg catalog.
do $$ begin
    if exists (select from pg_roles where rolname = 'trino_reader') then
        grant usage on schema transform to trino_reader;
        grant select on transform.runs, transform.run_nodes to trino_reader;
    end if;
end $$;
"""

REGISTRY_VERSION_SQL = """
select coalesce(string_agg(item, '|' order by item), '') from (
    select 't:' || tenant || ':' || created_at as item from registry.tenants
    union all
    select 's:' || site || ':' || tenant || ':' || lat || ':' || lon || ':' || created_at
    from registry.sites
    union all
    select 'd:' || device_id || ':' || tenant || ':' || site || ':' || created_at || ':'
        || coalesce(revoked_at::text, '')
    from registry.devices
) as items
"""


@dataclass(frozen=True)
class NodeResult:
    """One dbt node (model, seed, test, unit test) of a run."""

    node: str
    resource_type: str
    status: str
    rows_affected: int | None
    seconds: float
    message: str | None

    @property
    def failed(self) -> bool:
        return self.status in {"error", "fail", "runtime error"}


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    full_refresh: bool
    branch: str | None
    main_after: str | None
    bronze_rows: int | None
    silver_rows: int | None
    quarantined_rows: int | None
    seconds: float | None
    failed_nodes: str | None
    error: str | None


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        apply_when_changed(conn, "transform", [SCHEMA_SQL])


def acquire_lock(conn: psycopg.Connection[Any]) -> None:
    """Hold the transform lock for as long as `conn` stays open."""
    row = conn.execute("select pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
    if not row or not row[0]:
        holder = conn.execute(
            "select run_id, started_at from transform.runs where outcome = 'running' "
            "order by started_at desc limit 1"
        ).fetchone()
        what = (
            f"another transform run is in progress (run {holder[0]}, started "
            f"{holder[1]:%Y-%m-%d %H:%M:%S %Z})"
            if holder
            else "the transform lock is held (a run starting, or maintenance compacting "
            "silver and up)"
        )
        raise TransformLockedError(
            what,
            fix="wait for it to finish; `lakehouse transform runs` shows its progress",
        )
    # The lock is ours, so a record still 'running' belongs to a process that died.
    conn.execute(
        "update transform.runs set outcome = 'abandoned', finished_at = now(), "
        "error = 'the process running it ended before it finished' where outcome = 'running'"
    )


def try_lock(conn: psycopg.Connection[Any]) -> bool:
    """Take the transform lock if free (maintenance compacting the layers runs write)."""
    row = conn.execute("select pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
    return bool(row and row[0])


def lock_within(
    conn: psycopg.Connection[Any],
    seconds: float,
    *,
    poll: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Take the transform lock as soon as it is free, waiting up to `seconds`: the loop
    frees it between runs, so a waiter gets it in the gap instead of missing it."""
    deadline = clock() + seconds
    while not try_lock(conn):
        if clock() >= deadline:
            return False
        sleep(poll)
    return True


def unlock(conn: psycopg.Connection[Any]) -> None:
    conn.execute("select pg_advisory_unlock(%s)", (LOCK_KEY,))


def registry_version(conn: psycopg.Connection[Any]) -> int:
    """A 63-bit fingerprint of the registry rows the dimensions are built from."""
    import hashlib

    row = conn.execute(REGISTRY_VERSION_SQL).fetchone()
    digest = hashlib.sha256((row[0] if row else "").encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def start(
    conn: psycopg.Connection[Any],
    run_id: str,
    *,
    full_refresh: bool,
    branch: str | None,
    schema_prefix: str = "",
) -> None:
    conn.execute(
        "insert into transform.runs (run_id, outcome, full_refresh, branch, schema_prefix) "
        "values (%s, 'running', %s, %s, %s)",
        (run_id, full_refresh, branch, schema_prefix),
    )


def finish(
    conn: psycopg.Connection[Any],
    run_id: str,
    *,
    outcome: str,
    seconds: float,
    window: dict[str, Any] | None = None,
    trino_catalog: str | None = None,
    main_before: str | None = None,
    main_after: str | None = None,
    nodes: list[NodeResult] | None = None,
    counts: dict[str, int | None] | None = None,
    error: str | None = None,
    phases: dict[str, float] | None = None,
) -> None:
    counts = counts or {}
    nodes = nodes or []
    failed = ", ".join(n.node for n in nodes if n.failed) or None
    with conn.transaction():
        conn.execute(
            "update transform.runs set outcome = %s, finished_at = now(), seconds = %s, "
            "bronze_window = %s, trino_catalog = %s, main_before = %s, main_after = %s, "
            "bronze_rows = %s, silver_rows = %s, quarantined_rows = %s, failed_nodes = %s, "
            "error = %s, phases = %s::jsonb where run_id = %s",
            (
                outcome,
                seconds,
                json.dumps(window) if window is not None else None,
                trino_catalog,
                main_before,
                main_after,
                counts.get("bronze"),
                counts.get("silver"),
                counts.get("quarantine"),
                failed,
                error,
                json.dumps({k: round(v, 3) for k, v in phases.items()}) if phases else None,
                run_id,
            ),
        )
        with conn.cursor() as cur:
            cur.executemany(
                "insert into transform.run_nodes "
                "(run_id, node, resource_type, status, rows_affected, seconds, message) "
                "values (%s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        run_id,
                        n.node,
                        n.resource_type,
                        n.status,
                        n.rows_affected,
                        n.seconds,
                        n.message,
                    )
                    for n in nodes
                ],
            )


def last_finished(
    conn: psycopg.Connection[Any], outcomes: tuple[str, ...], schema_prefix: str = ""
) -> datetime | None:
    """When the last record with one of `outcomes` under `schema_prefix` finished."""
    row = conn.execute(
        "select max(finished_at) from transform.runs where outcome = any(%s) "
        "and coalesce(schema_prefix, '') = %s",
        (list(outcomes), schema_prefix),
    ).fetchone()
    return row[0] if row else None


def recent(conn: psycopg.Connection[Any], limit: int = 20) -> list[RunRecord]:
    rows = conn.execute(
        "select run_id, started_at, finished_at, outcome, full_refresh, branch, main_after, "
        "bronze_rows, silver_rows, quarantined_rows, seconds, failed_nodes, error "
        "from transform.runs order by started_at desc limit %s",
        (limit,),
    ).fetchall()
    return [RunRecord(*row) for row in rows]


# Outcomes of runs that did their job; anything else is a failure to show.
SUCCEEDED = ("published", "up_to_date", "audited", "running")


def loop_health(newest_first: list[RunRecord]) -> str | None:
    """One line on how the transform runs go: the last run, and the last failure with
    whether a run succeeded after it (`stack status` prints it)."""
    if not newest_first:
        return None
    last = newest_first[0]
    line = f"transform: last run {last.outcome} at {_clock(last.started_at)}"
    failure = next((r for r in newest_first if r.outcome not in SUCCEEDED), None)
    if failure is None:
        return line
    why = f" ({(failure.error or '').splitlines()[0][:120]})" if failure.error else ""
    if failure is last:
        first = failure
        for record in newest_first[1:]:
            if record.outcome in SUCCEEDED:
                break
            first = record
        return f"{line}; failing since {_clock(first.started_at)}{why}"
    when = _clock(failure.started_at)
    return f"{line}; last failure {failure.outcome} at {when}{why}, recovered since"


def _clock(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
