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

from lakehouse.clients import iceberg_rest_url
from lakehouse.config import Settings
from lakehouse.names import checked
from lakehouse.s3 import s3_endpoint

# Reconcile's branches and catalogs: `reconcile_<UTC time made>_<6 hex digits>`. The time
# in the name lets maintenance delete what a killed reconcile left behind.
RECONCILE_PREFIX = "reconcile_"
# A transform run's branch and catalog: `transform_<run id>`.
TRANSFORM_PREFIX = "transform_"
_RECONCILE_NAME = re.compile(r"^reconcile_(\d{14})_[0-9a-f]{6}$")


def reconcile_branch(now: datetime) -> str:
    return f"{RECONCILE_PREFIX}{now.astimezone(UTC):%Y%m%d%H%M%S}_{secrets.token_hex(3)}"


def reconcile_made_at(name: str) -> datetime | None:
    """When a reconcile branch was made, read from its name; None for other names."""
    match = _RECONCILE_NAME.match(name)
    if match is None:
        return None
    return datetime.strptime(match[1], "%Y%m%d%H%M%S").replace(tzinfo=UTC)


MAX_PARTITIONS_PER_WRITER = 4000
WRITER_SORT_BUFFER = "4MB"
DYNAMIC_FILTER_WAIT = "10s"


def lake_catalog_properties(settings: Settings, ref: str = "main") -> dict[str, str]:
    """Iceberg catalog properties for one Nessie branch through its REST endpoint.

    S3 secrets stay `${ENV:…}` references resolved inside the Trino process, so they
    appear neither in catalog files nor in a CREATE CATALOG statement.
    """
    return {
        "connector.name": "iceberg",
        "iceberg.catalog.type": "rest",
        "iceberg.rest-catalog.uri": iceberg_rest_url(settings, ref),
        # Nessie's bearer token, minted when Trino starts (lakehouse.catalog_tokens).
        "iceberg.rest-catalog.security": "OAUTH2",
        "iceberg.rest-catalog.oauth2.token": "${ENV:LAKEHOUSE_NESSIE_TOKEN}",
        "iceberg.rest-catalog.vended-credentials-enabled": "false",
        # A backfill writes every day it spans in one statement (silver and
        # anomaly_scores are partitioned by day): the default of 100 fails any load
        # longer than about three months. 4,000 days is eleven years.
        "iceberg.max-partitions-per-writer": str(MAX_PARTITIONS_PER_WRITER),
        # Sorted tables (silver) keep one sort buffer per open partition; at the default
        # 64 MB, a full refresh of three months of readings needs 5.6 GB and fails on
        # the query memory limit. Fuller buffers spill to sorted runs that are merged.
        "iceberg.writer-sort-buffer-size": WRITER_SORT_BUFFER,
        # A small run's MERGE reads the target only where its new rows' keys fall, once
        # the dynamic filter from those rows arrives; waiting the default 1 s, the scan
        # starts without it and reads every row (10 M in anomaly_scores: 3 s more).
        "iceberg.dynamic-filtering.wait-timeout": DYNAMIC_FILTER_WAIT,
        # Statistics cover every tenant's rows, whatever a row filter leaves: off where
        # tenants' analysts read (engineers may turn them on for a session; see
        # lakehouse.trino_access), on in a run's own catalog, where dbt plans its joins.
        "iceberg.table-statistics-enabled": "false" if ref == "main" else "true",
        "fs.native-s3.enabled": "true",
        "s3.endpoint": s3_endpoint(settings),
        "s3.region": settings.minio.region,
        "s3.path-style-access": "true",
        "s3.aws-access-key": "${ENV:LAKEHOUSE_S3_ACCESS_KEY}",
        "s3.aws-secret-key": "${ENV:LAKEHOUSE_S3_SECRET_KEY}",
    }


def create_branch_catalog(cursor: Any, settings: Settings, branch: str) -> str:
    """A catalog named like `branch`, reading and writing that branch; returns its name."""
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
