"""The pipeline's own work tables, kept apart from what analysts read.

`internal.readings_checked` (the latest run's bronze rows, each with the rule it fails),
`internal.bronze_progress` (how far silver has processed bronze) and
`internal.run_series` (the series each run's new silver rows belong to) are built by
dbt/models/internal and published with the layers; Trino grants the `internal` schema
to engineers and the platform's own principals, never to analysts or Superset
(lakehouse.trino_access).

Lakehouses made before this layout keep these tables in silver. The first transform run
(or audit) after the upgrade moves them on main, under the transform lock, before it
branches, so the run works on the new layout. Each table moves in a Nessie commit of
its own, a rename that keeps its content: a reader sees every table in one place or the
other, and a move cut short is finished by the next run. (Not on a branch merged
afterwards: Nessie 0.99 drops a table renamed on a branch from the merge.)

- `bronze_progress` and `run_series` are renamed, rows kept: the progress is where the
  next run starts (without it every bronze row would be processed again), and the
  series tell a serving publish still pending what to replace;
- `readings_checked` is dropped: every run builds it anew.

Until then, readers of main that need the progress (reconcile) find it in silver
(`LEGACY_SCHEMA`); the serving publish reads silver itself while `internal.run_series`
is missing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

from lakehouse.contracts import INTERNAL_SCHEMA, LEGACY_SCHEMA

log = logging.getLogger(__name__)

# Renamed into `internal` with their rows; dropped, as every run rebuilds them.
KEPT = ("bronze_progress", "run_series")
REBUILT = ("readings_checked",)


def legacy_tables(catalog: Catalog, prefix: str = "") -> list[str]:
    """The work tables still in `<prefix>silver` (none once the layout is current)."""
    legacy = f"{prefix}{LEGACY_SCHEMA}"
    return [t for t in (*KEPT, *REBUILT) if catalog.table_exists(f"{legacy}.{t}")]


def move_to_internal(catalog: Catalog, prefix: str = "") -> list[str]:
    """Move the work tables still in `<prefix>silver` to `<prefix>internal` through
    `catalog` (main); returns what was done, one line per table
    (nothing when the layout is already the current one).

    A kept table found in both schemas keeps its `internal` copy, the one the current
    code reads and writes; the silver copy is dropped."""
    legacy, internal = f"{prefix}{LEGACY_SCHEMA}", f"{prefix}{INTERNAL_SCHEMA}"
    found = legacy_tables(catalog, prefix)
    if not found:
        return []
    if not catalog.namespace_exists(internal):
        catalog.create_namespace(internal)
    done = []
    for table in found:
        old, new = f"{legacy}.{table}", f"{internal}.{table}"
        if table in KEPT and not catalog.table_exists(new):
            catalog.rename_table(old, new)
            done.append(f"moved {old} to {new}")
        else:
            catalog.drop_table(old)
            done.append(f"dropped {old}")
    for line in done:
        log.info("work tables out of silver: %s", line)
    return done
