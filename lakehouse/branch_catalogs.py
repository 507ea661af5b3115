"""Trino catalogs on a Nessie branch, made with CREATE CATALOG and dropped after use.

A transform run writes through one; `reconcile` reads main's state through one on a
branch of its own, which stays readable however main moves meanwhile.
"""

from __future__ import annotations

from typing import Any

from lakehouse.config import Settings
from lakehouse.names import checked


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
