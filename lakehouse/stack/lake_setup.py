"""Create the medallion namespaces and the bronze tables (`python -m lakehouse.stack.lake_setup`).

Nessie's bootstrap runs this in a short-lived process: pyiceberg and pyarrow, which it
needs, would otherwise stay loaded in the long-running supervisor for good.
"""

from __future__ import annotations

import sys

from lakehouse.clients import iceberg_catalog
from lakehouse.config import Settings
from lakehouse.contracts import ensure_bronze_tables
from lakehouse.credentials import load
from lakehouse.errors import LakehouseError


def ensure_lake(settings: Settings) -> None:
    catalog = iceberg_catalog(settings, load(settings), s3_key="ingest")
    existing = {ns[0] for ns in catalog.list_namespaces()}
    for namespace in settings.namespaces:
        if namespace not in existing:
            catalog.create_namespace(namespace)
    ensure_bronze_tables(catalog)


def main() -> None:
    try:
        ensure_lake(Settings())
    except LakehouseError as exc:
        sys.exit(exc.message)  # to stderr, exit 1


if __name__ == "__main__":
    main()
