"""What each Trino principal may do: the files Trino authenticates and authorises with.

Roles (a principal has one; Trino sees it as a group):

| role | may |
|---|---|
| engineer | all of `lake`, `pg` (read-only by its PostgreSQL role), run catalogs, all queries |
| transform | write silver and up and `internal`, read bronze and `pg`, own `transform_*` catalogs |
| ingest | read and write `lake.bronze` only |
| maintain | compact every table of `lake` (table procedures), create or drop nothing |
| analyst | read silver, gold, platinum (coordinates to 0.1°), run records; a tenant's: its rows |
| superset | read like an analyst; may impersonate tenant analysts |

The `internal` schema holds the pipeline's own work tables (dbt/models/internal: the
latest run's checked rows, silver's position in bronze, the series each run touched):
engineers and the platform's principals read it, analysts and Superset are not granted
it and do not see it.

Everyone sees and kills only their own queries (Trino always allows that), except
engineers. A tenant's analyst reads its rows of silver, gold and platinum and nothing
else: not the Iceberg metadata tables (`readings$files`, `$partitions`: counts and
bounds over every tenant), and of the `system` catalog only the JDBC metadata and their
own queries. Table statistics (`SHOW STATS`, plan estimates: figures over every
tenant's rows) are off in the `lake` and `pg` catalogs; engineers and the platform's
own principals may turn them on for a session in `lake`, nobody else. Every name is
quoted into the rules (lakehouse.trino_patterns), so a rule for `ptx.g` never matches
`ptx-g`.

Passwords are stored as bcrypt hashes (`password.db`); Trino re-reads every file within
5 seconds, so adding, disabling or removing a user needs no restart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lakehouse.private_files import write_private
from lakehouse.trino_patterns import any_of, exact, for_replacement, sql_string
from lakehouse.trino_users import ROLES, Principal

READ_SCHEMAS = "silver|gold|platinum"
# The transform writes the analysts' layers and its own work tables (never granted to
# analysts: see the module docstring).
INTERNAL_SCHEMA = "internal"
WRITE_SCHEMAS = f"{READ_SCHEMAS}|{INTERNAL_SCHEMA}"
ALL_PRIVILEGES = ["SELECT", "INSERT", "DELETE", "UPDATE", "OWNERSHIP", "GRANT_SELECT"]
# Analysts see where a site is to about 10 km, never its exact position.
LOCATION_MASKS = [
    {"name": "lat", "mask": "round(lat, 1)"},
    {"name": "lon", "mask": "round(lon, 1)"},
]
# Table names without `$`: Iceberg's metadata tables (`t$files`, `t$partitions`, …)
# summarise every row of `t`, whatever a row filter would leave.
DATA_TABLES = "[^$]+"
# Of the `system` catalog a tenant's analyst needs the JDBC clients' metadata and the
# list of their own queries; the rest (tasks, optimizer and transaction tables) tells
# of other users' work.
TENANT_SYSTEM_TABLES = [
    {"schema": "jdbc|metadata", "table": ".*"},
    {"schema": "runtime", "table": "queries"},
]


def write_files(etc: Path, everyone: list[Principal]) -> list[Path]:
    """password.db, group.txt and rules.json for Trino; returns the paths written.

    A disabled principal is in neither the password nor the group file, so it can
    neither log in nor be impersonated, and the rules refuse it besides."""
    password_db = etc / "password.db"
    groups = etc / "group.txt"
    rules = etc / "rules.json"
    active = [p for p in everyone if not p.disabled]
    write_private(password_db, "".join(f"{p.name}:{p.password_hash}\n" for p in active))
    members: dict[str, list[str]] = {role: [] for role in ROLES}
    for principal in active:
        members[principal.role].append(principal.name)
    write_private(
        groups, "".join(f"{role}:{','.join(names)}\n" for role, names in members.items() if names)
    )
    write_private(rules, json.dumps(access_rules(everyone), indent=1))
    return [password_db, groups, rules]


def access_rules(everyone: list[Principal]) -> dict[str, Any]:
    """Trino file-based access control; the first rule that matches decides."""
    active = [p for p in everyone if not p.disabled]
    disabled = [p.name for p in everyone if p.disabled]
    tenants = [p for p in active if p.tenant is not None]
    tenant_users = any_of(p.name for p in tenants)
    refused = [{"user": any_of(disabled), "allow": "none"}] if disabled else []
    engineers = [p.name for p in active if p.role == "engineer"]
    return {
        "catalogs": [
            *refused,
            # `reconcile` reads main through a catalog on a branch of its own.
            {"group": "engineer", "catalog": "reconcile_.*", "allow": "owner"},
            {"group": "engineer", "catalog": "lake|pg|system|transform_.*", "allow": "all"},
            # "owner" is what CREATE and DROP CATALOG need: only for the run catalogs.
            {"group": "transform", "catalog": "transform_.*", "allow": "owner"},
            {"group": "transform", "catalog": "lake", "allow": "all"},
            {"group": "transform", "catalog": "pg|system", "allow": "read-only"},
            {"group": any_of(["ingest", "maintain"]), "catalog": "lake", "allow": "all"},
            {
                "group": any_of(["analyst", "superset"]),
                "catalog": "lake|pg|system",
                "allow": "read-only",
            },
            {"catalog": "system", "allow": "read-only"},
        ],
        "schemas": [
            {"group": "engineer", "owner": True},
            {
                "group": "transform",
                "catalog": "lake|transform_.*",
                "schema": f"(.*_)?({WRITE_SCHEMAS})",
                "owner": True,
            },
            {"group": "ingest", "catalog": "lake", "schema": "(.*_)?bronze", "owner": True},
            {"owner": False},
        ],
        "tables": [
            *_service_tables(),
            *_tenant_tables(tenants, tenant_users),
            *_analyst_tables(),
        ],
        # Everyone may always see and kill their own queries (Trino's rule, not ours).
        "queries": [
            {"group": "engineer", "allow": ["execute", "view", "kill"]},
            {"allow": ["execute"]},
        ],
        # kill_query itself asks the query rules whose query it may kill.
        "procedures": [
            {
                "catalog": "system",
                "schema": "runtime",
                "procedure": "kill_query",
                "privileges": ["EXECUTE"],
            },
            {"catalog": "system", "schema": "builtin", "privileges": ["EXECUTE"]},
        ],
        # Its rules match users and roles, not groups: the engineers by name.
        "system_information": [{"user": any_of(engineers), "allow": ["read"]}],
        "impersonation": [
            {
                "original_user": exact("superset"),
                # Trino substitutes `$n` and unquotes `\x` in new_user before matching.
                "new_user": for_replacement(tenant_users),
                "allow": True,
            },
        ],
        "system_session_properties": [{"allow": True}],
        "catalog_session_properties": [
            {"group": any_of(STATISTICS_GROUPS), "allow": True},
            {"property": "statistics_enabled", "allow": False},
            {"allow": True},
        ],
    }


# Statistics are whole-table figures (row counts, distinct values, minimum and maximum
# of every column) that row filters do not touch: a tenant's analyst would read other
# tenants' bounds in `SHOW STATS` or in EXPLAIN's estimates. The `lake` catalog has them
# off (lakehouse.stack.trino); only these groups may turn them on for a session.
STATISTICS_GROUPS = ("engineer", "transform", "ingest", "maintain")


def _service_tables() -> list[dict[str, Any]]:
    return [
        {"group": "engineer", "privileges": ALL_PRIVILEGES},
        {
            "group": "transform",
            "catalog": "lake|transform_.*",
            "schema": f"(.*_)?({WRITE_SCHEMAS})",
            "privileges": ALL_PRIVILEGES,
        },
        {"group": "transform", "privileges": ["SELECT"]},
        {
            "group": "ingest",
            "catalog": "lake",
            "schema": "(.*_)?bronze",
            "privileges": ["SELECT", "INSERT"],
        },
        # Table procedures (optimize) need catalog access only; compaction reads
        # and rewrites rows, and never owns a schema.
        {"group": "maintain", "catalog": "lake", "privileges": ["SELECT", "INSERT", "DELETE"]},
    ]


def _tenant_tables(tenants: list[Principal], tenant_users: str) -> list[dict[str, Any]]:
    """A tenant's analyst: its rows of the data tables, a little of `system`, no more."""
    rows = [
        {
            "user": exact(p.name),
            "catalog": "lake",
            "schema": READ_SCHEMAS,
            "table": DATA_TABLES,
            "privileges": ["SELECT"],
            "filter": f"tenant = {sql_string(p.tenant or '')}",
            "columns": LOCATION_MASKS,
        }
        for p in tenants
    ]
    system = [
        {"user": tenant_users, "catalog": "system", **tables, "privileges": ["SELECT"]}
        for tables in TENANT_SYSTEM_TABLES
    ]
    return [*rows, *system, {"user": tenant_users, "privileges": []}]


def _analyst_tables() -> list[dict[str, Any]]:
    return [
        {
            "group": "analyst",
            "catalog": "lake",
            "schema": READ_SCHEMAS,
            "privileges": ["SELECT"],
            "columns": LOCATION_MASKS,
        },
        {
            "group": "superset",
            "catalog": "lake",
            "schema": READ_SCHEMAS,
            "privileges": ["SELECT"],
        },
        {
            "group": any_of(["analyst", "superset"]),
            "catalog": "pg",
            "schema": "transform",
            "privileges": ["SELECT"],
        },
        {"catalog": "system", "privileges": ["SELECT"]},
    ]
