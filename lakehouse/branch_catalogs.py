"""Trino catalogs on a Nessie branch, made with CREATE CATALOG and dropped after use.

A transform run writes through one; `reconcile` reads main's state through one on a
branch of its own, which stays readable however main moves meanwhile.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from lakehouse.config import Settings
from lakehouse.names import checked

# Reconcile's branches and catalogs: `reconcile_<UTC time made>_<6 hex digits>`. The time
# in the name lets maintenance delete what a killed reconcile left behind.
RECONCILE_PREFIX = "reconcile_"
_RECONCILE_NAME = re.compile(r"^reconcile_(\d{14})_[0-9a-f]{6}$")


def reconcile_branch(now: datetime) -> str:
    return f"{RECONCILE_PREFIX}{now.astimezone(UTC):%Y%m%d%H%M%S}_{secrets.token_hex(3)}"


def reconcile_made_at(name: str) -> datetime | None:
    """When a reconcile branch was made, read from its name; None for other names."""
    match = _RECONCILE_NAME.match(name)
    if match is None:
        return None
    return datetime.strptime(match[1], "%Y%m%d%H%M%S").replace(tzinfo=UTC)


def create_branch_catalog(cursor: Any, settings: Settings, branch: str) -> str:
    """A catalog named like `branch`, reading and writing that branch; returns its name."""
    from lakehouse.stack.trino import lake_catalog_properties

    properties = lake_catalog_properties(settings, ref=branch)
    connector = properties.pop("connector.name")
    assignments = ", ".join(
        f"\"{key}\" = '{value.replace(chr(39), chr(39) * 2)}'" for key, value in properties.items()
    )
    name = checked("catalog", branch)
    cursor.execute(f'create catalog "{name}" using {connector} with ({assignments})')
    cursor.fetchall()
    return name


def drop_catalog(cursor: Any, name: str) -> None:
    cursor.execute(f'drop catalog if exists "{checked("catalog", name)}"')
    cursor.fetchall()


def drop_orphan_catalogs(cursor: Any, prefix: str, branches: Callable[[], set[str]]) -> None:
    """Drop the catalogs named `prefix…` whose branch no longer exists (a run discarded,
    or a killed reconcile's branch that maintenance deleted).

    The catalogs are listed before the branches: every catalog is made after its branch,
    so one that another process is making now has its branch in the later list."""
    cursor.execute("show catalogs")
    catalogs = [name for (name,) in cursor.fetchall() if name.startswith(prefix)]
    if not catalogs:
        return
    live = branches()
    for name in catalogs:
        if name not in live:
            drop_catalog(cursor, name)
