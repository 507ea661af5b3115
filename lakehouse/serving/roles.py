"""PostgreSQL roles of the serving layer and the check that keeps them safe.

- `lakehouse` owns schema `serving` and every table in it, and publishes. No dashboard
  connection uses it.
- `serving_reader` (no login) holds SELECT on the serving tables; every role below is a
  member of it and nothing else.
- `tenant_<tenant>`: one login role per tenant. A policy on every table lets it see the
  rows whose `tenant` maps to its *login* role (`session_user`, which no SQL a tenant
  can run changes), so `SET ROLE`, `RESET ROLE` or a session setting move nothing.
- `serving_all`: Superset administrators; sees every tenant.
- `serving_anonymous`: the serving database's default login in Superset; sees no rows,
  so a user the connection mutator cannot map sees nothing rather than everything.

Passwords are derived from the stack's serving secret (HMAC), so Superset and the CLI
agree on them without another secrets file.

Row-level security filters rows, not what PostgreSQL knows about a whole table. In the
serving database every role (PUBLIC) therefore loses what counts or measures other
tenants' rows: the statistics functions (`pg_stat_*`, and so the `pg_stat_*` views),
the size functions, the functions that run a query string (`query_to_xml` runs
EXPLAIN, whose estimates count every row) and `pg_class`'s row and page counts. The
platform's own roles get `pg_class` back whole. Catalogs still list every schema's
name to anyone; Superset shows business users the serving schema only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from lakehouse.credentials import AUDIT_WRITER_ROLE, Credentials
from lakehouse.credentials import READER_ROLE as TRINO_READER_ROLE
from lakehouse.errors import UnsafeServingRoleError
from lakehouse.names import checked

OWNER_ROLE = "lakehouse"
READER_ROLE = "serving_reader"
ALL_TENANTS_ROLE = "serving_all"
ANONYMOUS_ROLE = "serving_anonymous"
TENANT_PREFIX = "tenant_"
_MAX_IDENTIFIER = 63

# What PUBLIC may not run in the serving database: statistics and sizes count every
# tenant's rows, and these functions run a query string (EXPLAIN among them).
STATISTICS_FUNCTION_PREFIX = "pg_stat_"
HIDDEN_FUNCTIONS = (
    "pg_relation_size", "pg_table_size", "pg_indexes_size", "pg_total_relation_size",
    "pg_database_size", "pg_tablespace_size",
    "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema",
)  # fmt: skip
# pg_class columns that count a table's rows (relallfrozen is new in PostgreSQL 18).
COUNTING_COLUMNS = ("reltuples", "relpages", "relallvisible", "relallfrozen")
# Platform roles of the serving database that read pg_class whole (Trino's `pg` catalog
# plans with reltuples); never a dashboard role.
CATALOG_READERS = (OWNER_ROLE, TRINO_READER_ROLE, AUDIT_WRITER_ROLE)


def tenant_role(tenant: str) -> str:
    """The login role of one tenant (a hash of the name when it would not fit)."""
    checked("tenant", tenant)
    name = f"{TENANT_PREFIX}{tenant}"
    if len(name.encode()) <= _MAX_IDENTIFIER:
        return name
    return f"{TENANT_PREFIX}{hashlib.sha256(tenant.encode()).hexdigest()[:40]}"


def role_password(credentials: Credentials, role: str) -> str:
    digest = hmac.new(
        credentials.serving_secret.encode(), f"postgres-role:{role}".encode(), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _ensure_login(conn: Any, role: str, password: str) -> None:
    exists = conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone()
    conn.execute(
        sql.SQL(
            "{} role {} login inherit nosuperuser nobypassrls nocreaterole nocreatedb "
            "noreplication connection limit 50 password {}"
        ).format(
            sql.SQL("alter" if exists else "create"), sql.Identifier(role), sql.Literal(password)
        )
    )
    conn.execute(
        sql.SQL("grant {} to {}").format(sql.Identifier(READER_ROLE), sql.Identifier(role))
    )


def ensure_roles(superuser: Any, credentials: Credentials, tenants: list[str]) -> None:
    """Create or update the reader group, the fixed logins and one login per tenant.

    `superuser` is an autocommit connection as the PostgreSQL superuser to the database
    that holds the serving schema (role administration needs it).
    """
    exists = superuser.execute(
        "select 1 from pg_roles where rolname = %s", (READER_ROLE,)
    ).fetchone()
    if not exists:
        superuser.execute(
            sql.SQL("create role {} nologin nosuperuser nobypassrls").format(
                sql.Identifier(READER_ROLE)
            )
        )
    for role in (ALL_TENANTS_ROLE, ANONYMOUS_ROLE, *(tenant_role(t) for t in tenants)):
        _ensure_login(superuser, role, role_password(credentials, role))
    hide_counts(superuser)


_HIDDEN_FUNCTIONS_SQL = """
select format('pg_catalog.%%I(%%s)', p.proname, pg_get_function_identity_arguments(p.oid))
from pg_proc as p
where p.pronamespace = 'pg_catalog'::regnamespace
    and (starts_with(p.proname, %(prefix)s) or p.proname = any(%(names)s))
    and has_function_privilege('public', p.oid, 'execute')
"""


def hide_counts(superuser: Any) -> None:
    """Take from PUBLIC, in the serving database, what counts rows past row-level
    security (see the module docstring); idempotent, and cheap once done."""
    functions = superuser.execute(
        _HIDDEN_FUNCTIONS_SQL,
        {"prefix": STATISTICS_FUNCTION_PREFIX, "names": list(HIDDEN_FUNCTIONS)},
    ).fetchall()
    for (signature,) in functions:  # qualified and quoted by format() above
        superuser.execute(
            sql.SQL("revoke execute on function {} from public").format(sql.SQL(signature))
        )
    whole = superuser.execute(
        "select has_table_privilege('public', 'pg_catalog.pg_class', 'select')"
    ).fetchone()
    if whole and whole[0]:
        columns = [
            row[0]
            for row in superuser.execute(
                "select attname from pg_attribute where attrelid = 'pg_catalog.pg_class'::regclass"
                " and attnum > 0 and not attisdropped and attname <> all(%s) order by attnum",
                (list(COUNTING_COLUMNS),),
            )
        ]
        with superuser.transaction():
            superuser.execute("revoke select on pg_catalog.pg_class from public")
            superuser.execute(
                sql.SQL("grant select ({}) on pg_catalog.pg_class to public").format(
                    sql.SQL(", ").join(sql.Identifier(c) for c in columns)
                )
            )
    readers = [
        row[0]
        for row in superuser.execute(
            "select rolname from pg_roles where rolname = any(%s)", (list(CATALOG_READERS),)
        )
    ]
    for role in readers:
        superuser.execute(
            sql.SQL("grant select on pg_catalog.pg_class to {}").format(sql.Identifier(role))
        )
    superuser.execute("revoke all on schema public from public")


@dataclass(frozen=True)
class RoleProblem:
    role: str
    problem: str


_PROBLEMS_SQL = """
with recursive members(oid) as (
    -- Explicit members of the reader group, however indirect (a superuser passes every
    -- membership test, so pg_has_role cannot tell who really is one).
    select m.member from pg_auth_members as m
    where m.roleid = (select oid from pg_roles where rolname = %(reader)s)
    union
    select m.member from pg_auth_members as m join members on m.roleid = members.oid
), facing as (
    select r.oid, r.rolname, r.rolsuper, r.rolbypassrls
    from pg_roles as r
    where r.rolname in (%(all)s, %(anonymous)s)
        or r.rolname like %(tenants)s
        or r.oid in (select oid from members)
), serving_tables as (
    select c.oid, c.relname, c.relowner, c.relrowsecurity, c.relforcerowsecurity
    from pg_class as c
    join pg_namespace as n on n.oid = c.relnamespace
    where n.nspname = %(schema)s and c.relkind in ('r', 'p')
)
select f.rolname, 'is a superuser' from facing as f where f.rolsuper
union all
select f.rolname, 'has BYPASSRLS' from facing as f where f.rolbypassrls
union all
select f.rolname, 'owns serving table ' || t.relname
from facing as f cross join serving_tables as t
where f.oid = t.relowner or (not f.rolsuper and pg_has_role(f.oid, t.relowner, 'member'))
union all
select t.relname, 'does not force row-level security'
from serving_tables as t where not (t.relrowsecurity and t.relforcerowsecurity)
"""


def unsafe_roles(conn: Any, schema: str) -> list[RoleProblem]:
    """What makes the serving path unsafe: dashboard-facing roles that are superusers,
    bypass RLS or own (or belong to the owner of) a serving table, and serving tables
    without forced RLS."""
    rows = conn.execute(
        _PROBLEMS_SQL,
        {
            "all": ALL_TENANTS_ROLE,
            "anonymous": ANONYMOUS_ROLE,
            "tenants": TENANT_PREFIX.replace("_", "\\_") + "%",
            "reader": READER_ROLE,
            "schema": schema,
        },
    ).fetchall()
    return [RoleProblem(role, problem) for role, problem in rows]


def check_roles(conn: Any, schema: str) -> None:
    """Refuse to serve (UnsafeServingRoleError naming the role) when anything is unsafe."""
    problems = unsafe_roles(conn, schema)
    if problems:
        listed = "; ".join(f"{p.role} {p.problem}" for p in problems)
        raise UnsafeServingRoleError(
            f"the serving path is unsafe: {listed}",
            fix="a role dashboards use must be NOSUPERUSER NOBYPASSRLS and own no serving "
            "table; run `lakehouse serve check` after fixing it",
        )
