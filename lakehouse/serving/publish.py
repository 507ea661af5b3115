"""Publish gold and platinum into PostgreSQL schema `serving`.

A transform run that published records which silver rows it added (`run_id`), so the
groups they fall in are exactly what changed in gold and platinum. A publish takes every
published run not served yet, reads from Trino only the rows of those groups, and in
ONE PostgreSQL transaction deletes the groups and inserts their new rows in every
serving table. Dashboards read either the old or the new state, never a mix. The run
records (`transform.runs.serving`) say what was published. With no run served yet, or
on `--full-refresh`, every table is replaced whole (still one transaction).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from psycopg import sql
from trino.exceptions import Error as TrinoError

from lakehouse import transform_runs as runs
from lakehouse.clients import postgres_connection, trino_connection
from lakehouse.config import Settings
from lakehouse.credentials import Credentials
from lakehouse.ddl import apply_when_changed
from lakehouse.errors import ServingError
from lakehouse.names import checked
from lakehouse.serving import roles
from lakehouse.serving.tables import TABLES, ServingTable

log = logging.getLogger(__name__)

# The runs of this schema prefix (runs record the prefix they wrote under).
_OURS = "coalesce(schema_prefix, '') = %(prefix)s"

# Serializes publishers (advisory lock key "serving").
LOCK_KEY = 0x73657276696E67

SCHEMA_SQL = """
create schema if not exists {schema};
create table if not exists {schema}.tenant_roles (
    role_name text primary key,
    tenant text not null unique
);
-- The tenant of the connection's LOGIN role. session_user is who authenticated; no SQL
-- a tenant may run (SET ROLE, RESET ROLE, set_config) changes it.
create or replace function {schema}.current_tenant() returns text
    language sql stable security definer
    set search_path = pg_catalog, pg_temp
    as $$ select tenant from {schema}.tenant_roles where role_name = session_user $$;
revoke all on function {schema}.current_tenant() from public;
revoke all on {schema}.tenant_roles from public;
alter table {schema}.tenant_roles enable row level security;
alter table {schema}.tenant_roles force row level security;
drop policy if exists publisher on {schema}.tenant_roles;
create policy publisher on {schema}.tenant_roles to lakehouse using (true) with check (true);
"""


@dataclass
class TableChange:
    deleted: int = 0
    inserted: int = 0


@dataclass
class PublishReport:
    outcome: str  # published | up_to_date | nothing_published
    full_refresh: bool = False
    runs: list[str] = field(default_factory=list)
    tables: dict[str, TableChange] = field(default_factory=dict)
    read_seconds: float = 0.0
    write_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        return self.read_seconds + self.write_seconds

    def record(self) -> dict[str, Any]:
        return {
            "full_refresh": self.full_refresh,
            "runs": self.runs,
            "tables": {name: asdict(change) for name, change in self.tables.items()},
            "seconds": round(self.seconds, 3),
        }


def schema_statements(schema: str) -> list[str]:
    """The DDL of the serving schema: tables, forced RLS, policies and grants.

    `schema` comes from validated settings (a plain lowercase identifier)."""
    reader, everyone = roles.READER_ROLE, roles.ALL_TENANTS_ROLE
    statements = [
        SCHEMA_SQL.format(schema=schema),
        f"grant usage on schema {schema} to {reader}",
        f"grant execute on function {schema}.current_tenant() to {reader}",
    ]
    for table in TABLES:
        name = f"{schema}.{table.name}"
        statements += [
            table.create_sql(schema),
            *table.index_sql(schema),
            f"alter table {name} enable row level security",
            f"alter table {name} force row level security",
            *(
                f"drop policy if exists {p} on {name}"
                for p in ("publisher", "tenant_rows", "all_tenants")
            ),
            f"create policy publisher on {name} to {roles.OWNER_ROLE} "
            "using (true) with check (true)",
            # A scalar subquery: the tenant is looked up once per query, not per row.
            f"create policy tenant_rows on {name} for select to {reader} "
            f"using (tenant = (select {schema}.current_tenant()))",
            f"create policy all_tenants on {name} for select to {everyone} using (true)",
            f"revoke all on {name} from public",
            f"grant select on {name} to {reader}",
        ]
    return statements


def ensure_schema(owner: Any, schema: str) -> None:
    """Apply the serving DDL when it changed (its digest is kept as the schema's comment),
    so the publish after every transform run takes no table locks for it."""
    runs.ensure_schema(owner)
    with owner.transaction():
        owner.execute("select pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        apply_when_changed(owner, schema, schema_statements(schema))


def _superuser(settings: Settings, credentials: Credentials) -> Any:
    """Role administration needs the PostgreSQL superuser (autocommit)."""
    import psycopg

    return psycopg.connect(
        host=settings.server_host("postgres"),
        port=settings.postgres.port,
        user=settings.postgres.superuser,
        password=credentials.postgres_superuser_password,
        dbname="lakehouse",
        connect_timeout=5,
        autocommit=True,
    )


_ROLES_IN_PLACE_SQL = """
select count(*) from pg_roles as r
join pg_auth_members as m on m.member = r.oid
where r.rolcanlogin and r.rolname = any(%(logins)s)
    and m.roleid = (select oid from pg_roles where rolname = %(reader)s)
"""


class Scope:
    """Which rows of a table one run changed, from its touched series (device, site,
    metric, first hour, last hour); the same groups `_delete_sql` deletes."""

    def __init__(self, touched: list[tuple[Any, ...]]) -> None:
        self.hours: dict[tuple[str, str], tuple[datetime, datetime]] = {}
        self.days: dict[tuple[str, str], tuple[date, date]] = {}
        for device_id, site, metric, lo, hi in touched:
            self.hours[(device_id, metric)] = _widen(self.hours.get((device_id, metric)), lo, hi)
            days = (lo.astimezone(UTC).date(), hi.astimezone(UTC).date())
            self.days[(site, metric)] = _widen(self.days.get((site, metric)), *days)

    def holds(self, table: ServingTable, row: tuple[Any, ...]) -> bool:
        value = dict(zip(table.column_names, row, strict=True))
        if table.scope == "days":
            span = self.days.get((value["site"], value["metric"]))
            return span is not None and span[0] <= value["day"] <= span[1]
        hours = self.hours.get((value["device_id"], value["metric"]))
        if hours is None:
            return False
        if table.scope == "since":
            return bool(value["hour"] >= hours[0])
        return bool(hours[0] <= value["hour"] <= hours[1])


def _widen(span: tuple[Any, Any] | None, lo: Any, hi: Any) -> tuple[Any, Any]:
    return (lo, hi) if span is None else (min(span[0], lo), max(span[1], hi))


class ServingPublisher:
    def __init__(self, settings: Settings, credentials: Credentials) -> None:
        self.settings = settings
        self.credentials = credentials
        self.prefix = settings.transform.schema_prefix
        self.schema = settings.serving.schema_name

    def prepare(self) -> list[str]:
        """Roles (always brought up to date), schema and the safety check; returns the
        tenants."""
        with postgres_connection(self.settings, self.credentials) as owner:
            owner.autocommit = True
            return self._prepare(owner, always_sync=True)

    def _prepare(self, owner: Any, *, always_sync: bool) -> list[str]:
        """As `prepare`; without `always_sync` the roles are left alone when every tenant
        already has its login role and mapping, so a publish pays one query for them."""
        tenants = [
            row[0] for row in owner.execute("select tenant from registry.tenants order by 1")
        ]
        wanted = sorted((roles.tenant_role(t), t) for t in tenants)
        in_place = not always_sync and self._roles_in_place(owner, wanted)
        if not in_place:  # the roles first: the schema's grants name them
            with _superuser(self.settings, self.credentials) as superuser:
                roles.ensure_roles(superuser, self.credentials, tenants)
        ensure_schema(owner, self.schema)
        if not in_place:
            with owner.transaction():
                owner.execute(f"delete from {self.schema}.tenant_roles")
                _insert(owner, f"{self.schema}.tenant_roles", ["role_name", "tenant"], wanted)
        roles.check_roles(owner, self.schema)
        return tenants

    def _roles_in_place(self, owner: Any, wanted: list[tuple[str, str]]) -> bool:
        mapping = f"{self.schema}.tenant_roles"
        exists = owner.execute("select to_regclass(%s)", (mapping,)).fetchone()
        if not (exists and exists[0]):
            return False
        mapped = owner.execute(f"select role_name, tenant from {mapping} order by 1, 2")
        if [tuple(row) for row in mapped.fetchall()] != wanted:
            return False
        logins = [roles.ALL_TENANTS_ROLE, roles.ANONYMOUS_ROLE, *(role for role, _ in wanted)]
        found = owner.execute(
            _ROLES_IN_PLACE_SQL, {"logins": logins, "reader": roles.READER_ROLE}
        ).fetchone()
        return bool(found and found[0] == len(logins))

    def publish(
        self,
        *,
        full_refresh: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> PublishReport:
        """Publish every published run not served yet (or everything); idempotent."""
        say = progress or (lambda message: log.info("%s", message))
        with postgres_connection(self.settings, self.credentials) as owner:
            owner.autocommit = True
            self._prepare(owner, always_sync=False)
            owner.execute("select pg_advisory_lock(%s)", (LOCK_KEY,))
            try:
                state = owner.execute(
                    "select coalesce(array_agg(run_id order by started_at) "
                    "filter (where serving is null), '{}'), coalesce(bool_or(serving is not null), "
                    f"false), count(*) from transform.runs where {_OURS} and outcome = 'published'",
                    {"prefix": self.prefix},
                ).fetchone()
                pending, served_before, published = (
                    (list(state[0]), state[1], state[2]) if state else ([], False, 0)
                )
                if not published:  # gold and platinum do not exist yet
                    return PublishReport(outcome="nothing_published")
                full = full_refresh or not served_before
                if not full and not pending:
                    return PublishReport(outcome="up_to_date")
                report = PublishReport(outcome="published", full_refresh=full, runs=pending)
                started = time.monotonic()
                touched, rows = self._read(pending, full=full, say=say)
                report.read_seconds = time.monotonic() - started
                started = time.monotonic()
                self._write(owner, report, touched, rows)
                report.write_seconds = time.monotonic() - started
                return report
            finally:
                owner.execute("select pg_advisory_unlock(%s)", (LOCK_KEY,))

    # -- reading from Trino ---------------------------------------------------------------
    def _touched_sql(self, run_ids: Sequence[str], *, recorded: bool) -> str:
        """Per series (device, site, metric) the hours the runs' new silver rows span:
        as each run recorded them (internal.run_series), or from silver itself."""
        listed = ", ".join(f"'{checked('run id', r)}'" for r in run_ids)
        if recorded:
            return (
                "select device_id, site, metric, min(first_hour) as lo, max(last_hour) as hi "
                f'from "{self.prefix}internal".run_series where run_id in ({listed}) '
                "group by 1, 2, 3"
            )
        return (
            "select device_id, site, metric, min(date_trunc('hour', ts)) as lo, "
            "max(date_trunc('hour', ts)) as hi "
            f'from "{self.prefix}silver".readings where run_id in ({listed}) group by 1, 2, 3'
        )

    def _source_sql(self, table: ServingTable, full: bool, since: datetime | None) -> str:
        """The rows of `table` to publish: all of them, or (incrementally) those from the
        touched series' earliest hour on, a bound that lets Iceberg skip older files.
        `Scope.holds` then keeps exactly the touched groups."""
        source = f'"{self.prefix}{table.layer}"."{table.source}" as s'
        select = f"select {table.select_list()} from {source} where {table.where}"
        if full or table.scope == "all" or since is None or table.time_column is None:
            return select
        low = _literal(since)
        return f"{select} and s.{table.time_column} >= " + (
            f"cast({low} as date)" if table.time_column == "day" else low
        )

    def _read(
        self, pending: list[str], *, full: bool, say: Callable[[str], None]
    ) -> tuple[list[tuple[Any, ...]], dict[str, list[tuple[Any, ...]]]]:
        """The touched series, then every table's rows, read in parallel (each query is
        small; its fixed cost in Trino is most of its time)."""
        touched: list[tuple[Any, ...]] = []
        since = None
        if not full and pending:
            cursor = self._trino()
            # Not `show tables`: the schema itself is missing until a run has made it.
            cursor.execute(
                "select table_name from information_schema.tables "
                f"where table_schema = '{self.prefix}internal' and table_name = 'run_series'"
            )
            recorded = bool(cursor.fetchall())
            cursor.execute(self._touched_sql(pending, recorded=recorded))
            touched = [tuple(row) for row in cursor.fetchall()]
            since = min((row[3] for row in touched), default=None)
        scope = Scope(touched)

        def read(table: ServingTable) -> list[tuple[Any, ...]]:
            if not full and table.scope != "all" and not touched:
                return []
            cursor = self._trino()
            cursor.execute(self._source_sql(table, full, since))
            rows = [tuple(row) for row in cursor.fetchall()]
            if not full and table.scope != "all":
                rows = [row for row in rows if scope.holds(table, row)]
            say(f"read {len(rows):,} row(s) of {table.layer}.{table.source}")
            return rows

        try:
            with ThreadPoolExecutor(max_workers=len(TABLES)) as pool:
                read_rows = dict(zip((t.name for t in TABLES), pool.map(read, TABLES), strict=True))
        except TrinoError as exc:
            raise ServingError(
                f"reading the marts from Trino failed: {getattr(exc, 'message', exc)}",
                fix="check `lakehouse stack status` and `lakehouse transform status`; "
                "nothing was changed in serving",
            ) from exc
        return touched, read_rows

    def _trino(self) -> Any:
        return trino_connection(
            self.settings, catalog="lake", user=self.settings.transform.trino_user,
            credentials=self.credentials,
        ).cursor()  # fmt: skip

    # -- writing to PostgreSQL, one transaction -------------------------------------------
    def _write(
        self,
        owner: Any,
        report: PublishReport,
        touched: list[tuple[Any, ...]],
        rows: dict[str, list[tuple[Any, ...]]],
    ) -> None:
        with owner.transaction():
            owner.execute(
                "create temp table touched (device_id text, site text, metric text, "
                "lo timestamptz, hi timestamptz) on commit drop"
            )
            _copy(owner, "touched", ["device_id", "site", "metric", "lo", "hi"], touched)
            owner.execute("analyze touched")
            for table in TABLES:
                target = f"{self.schema}.{table.name}"
                deleted = owner.execute(_delete_sql(target, table, report.full_refresh)).rowcount
                _insert(owner, target, table.column_names, rows[table.name])
                report.tables[table.name] = TableChange(
                    deleted=max(deleted, 0), inserted=len(rows[table.name])
                )
            served = json.dumps(report.record())
            if report.full_refresh:
                owner.execute(
                    f"update transform.runs set serving = %(served)s::jsonb where {_OURS} "
                    "and outcome = 'published' and serving is null",
                    {"served": served, "prefix": self.prefix},
                )
            else:
                owner.execute(
                    "update transform.runs set serving = %s::jsonb where run_id = any(%s)",
                    (served, report.runs),
                )


def _delete_sql(target: str, table: ServingTable, full: bool) -> str:
    if full or table.scope == "all":
        return f"delete from {target}"
    using = {
        "hours": "touched as t where s.device_id = t.device_id and s.metric = t.metric "
        "and s.hour between t.lo and t.hi",
        "days": "(select site, metric, min(lo) as lo, max(hi) as hi from touched group by 1, 2) "
        "as t where s.site = t.site and s.metric = t.metric and s.day between "
        "(t.lo at time zone 'UTC')::date and (t.hi at time zone 'UTC')::date",
        "since": "(select device_id, metric, min(lo) as lo from touched group by 1, 2) as t "
        "where s.device_id = t.device_id and s.metric = t.metric and s.hour >= t.lo",
    }[table.scope]
    return f"delete from {target} as s using {using}"


def _literal(value: Any) -> str:
    if isinstance(value, datetime):
        return f"from_iso8601_timestamp_nanos('{value.astimezone(UTC).isoformat()}')"
    return "'" + str(value).replace("'", "''") + "'"


def _copy(conn: Any, target: str, columns: list[str], rows: Iterable[tuple[Any, ...]]) -> None:
    statement = sql.SQL("copy {} ({}) from stdin").format(
        sql.SQL(target), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    with conn.cursor().copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def _insert(conn: Any, target: str, columns: list[str], rows: Iterable[tuple[Any, ...]]) -> None:
    """COPY into a table under row-level security, which COPY itself refuses: through a
    temporary staging table, then one INSERT … SELECT (inside the caller's transaction)."""
    conn.execute(f"create temp table staged (like {target}) on commit drop")
    _copy(conn, "staged", columns, rows)
    listed = ", ".join(columns)
    conn.execute(f"insert into {target} ({listed}) select {listed} from staged")
    conn.execute("drop table staged")


def describe(report: PublishReport) -> str:
    if report.outcome == "up_to_date":
        return "serving is up to date: no published run waits to be served"
    if report.outcome == "nothing_published":
        return (
            "nothing to serve yet: no transform run has published gold and platinum "
            "(`lakehouse transform run` builds them)"
        )
    what = "full refresh" if report.full_refresh else f"{len(report.runs)} run(s)"
    changes = ", ".join(
        f"{name} -{change.deleted:,}/+{change.inserted:,}" for name, change in report.tables.items()
    )
    return f"published {what} to serving in {report.seconds:.1f} s: {changes}"


__all__ = ["PublishReport", "ServingError", "ServingPublisher", "describe", "ensure_schema"]
