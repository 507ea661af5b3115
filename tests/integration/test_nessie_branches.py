"""A table created on a Nessie branch stays invisible on main until the branch is merged."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pytest

from lakehouse.clients import iceberg_catalog, trino_connection
from lakehouse.errors import LakehouseError, ReferenceConflictError
from lakehouse.nessie import NessieClient

pytestmark = pytest.mark.integration


def test_branch_table_appears_on_main_only_after_merge(stack, stack_settings, credentials, unique):
    branch = f"wap_{unique}"
    name = f"bronze.branch_only_{unique}"
    with NessieClient(stack_settings) as nessie:
        nessie.create_branch(branch)
        try:
            on_branch = iceberg_catalog(stack_settings, credentials, ref=branch, s3_key="ingest")
            on_main = iceberg_catalog(stack_settings, credentials, s3_key="ingest")
            table = on_branch.create_table(name, schema=pa.schema([("id", pa.int64())]))
            table.append(pa.table({"id": pa.array([1, 2, 3], pa.int64())}))

            assert on_branch.table_exists(name)
            assert not on_main.table_exists(name)
            cursor = trino_connection(stack_settings).cursor()
            cursor.execute(
                "select table_name from lake.information_schema.tables "
                f"where table_schema = 'silver' and table_name = 'branch_only_{unique}'"
            )
            assert cursor.fetchall() == []

            main_before = nessie.reference("main").hash
            merged = nessie.merge(branch, "main", message=f"publish {branch}")
            assert merged.hash != main_before

            assert on_main.table_exists(name)
            cursor.execute(f"select count(*), sum(id) from lake.{name}")
            assert cursor.fetchall() == [[3, 6]]
        finally:
            nessie.delete_branch(branch)
            if iceberg_catalog(stack_settings, credentials, s3_key="ingest").table_exists(name):
                iceberg_catalog(stack_settings, credentials, s3_key="ingest").drop_table(name)
        assert branch not in {ref.name for ref in nessie.references()}


def test_creating_an_existing_branch_is_a_conflict(stack, stack_settings, unique):
    branch = f"dup_{unique}"
    with NessieClient(stack_settings) as nessie:
        nessie.create_branch(branch)
        try:
            with pytest.raises(ReferenceConflictError):
                nessie.create_branch(branch)
        finally:
            nessie.delete_branch(branch)


def test_commits_work_at_once_after_postgres_restarts(stack, stack_settings, unique):
    """Nessie's pooled connections die with PostgreSQL; none may fail a commit after."""
    with NessieClient(stack_settings) as nessie:
        main = nessie.reference("main").hash
        names = [f"pool_{unique}_{n}" for n in range(24)]
        for name in names:
            nessie.create_branch(name)

        def read(name: str) -> str:
            with NessieClient(stack_settings) as client:
                return client.reference(name).hash

        # Concurrent requests fill the pool with connections.
        with ThreadPoolExecutor(12) as pool:
            assert set(pool.map(read, names * 4)) == {main}
        stack.hold("postgres")
        stack.release("postgres")
        failures = []
        for name in names:
            try:
                nessie.delete_branch(name)
            except LakehouseError as exc:
                failures.append(str(exc))
        assert failures == []
        assert nessie.reference("main").hash == main
