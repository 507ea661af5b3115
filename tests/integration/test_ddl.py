"""Schema DDL runs once per change, so frequent callers take no table locks."""

from __future__ import annotations

import pytest

from lakehouse.ddl import apply_when_changed

pytestmark = pytest.mark.integration


def test_the_same_ddl_runs_once_and_a_changed_one_runs_again(registry_conn, unique):
    conn, schema = registry_conn, f"ddl_{unique}"
    # Without IF NOT EXISTS: running either statement twice would fail.
    first = [f"create schema {schema}", f"create table {schema}.t (a int)"]
    try:
        with conn.transaction():
            apply_when_changed(conn, schema, first)
        with conn.transaction():
            apply_when_changed(conn, schema, first)
        changed = [
            f"create schema if not exists {schema}",
            f"alter table {schema}.t add column b int",
        ]
        with conn.transaction():
            apply_when_changed(conn, schema, changed)
        columns = conn.execute(
            "select column_name from information_schema.columns "
            "where table_schema = %s and table_name = 't' order by ordinal_position",
            (schema,),
        ).fetchall()
        assert columns == [("a",), ("b",)]
        with conn.transaction():
            apply_when_changed(conn, schema, changed)  # would fail: column b exists
    finally:
        conn.execute(f"drop schema if exists {schema} cascade")


def test_a_transform_run_leaves_the_registry_tables_unlocked(registry_conn):
    """What the runner calls on every run takes no lock on the tables the gateway writes."""
    from lakehouse import registry
    from lakehouse import transform_runs as runs

    runs.ensure_schema(registry_conn)  # the first call after a change applies it
    with registry_conn.transaction():
        runs.ensure_schema(registry_conn)
        registry.ensure_schema(registry_conn)
        locked = registry_conn.execute(
            "select count(*) from pg_locks l join pg_class c on c.oid = l.relation "
            "join pg_namespace n on n.oid = c.relnamespace "
            "where l.pid = pg_backend_pid() and n.nspname in ('registry', 'transform') "
            "and l.mode = 'AccessExclusiveLock'"
        ).fetchone()
    assert locked == (0,)
