"""One write-audit-publish run.

1. Take the lock and record the run (PostgreSQL, schema `transform`).
2. Branch `transform_<run id>` from main in Nessie; everything below happens there.
3. Read the bronze window on the branch (committed offsets minus silver's progress);
   with no new bronze rows and an unchanged registry, stop: main stays as it is.
4. Add a Trino catalog of the same name on the branch and `dbt build` into it.
5. Every test passed: merge the branch into main (one Nessie commit publishes all
   layers and the new progress at once), then drop the catalog and the branch.
   Anything failed: main is untouched; branch and catalog stay for inspection.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from lakehouse import audit, registry
from lakehouse.clients import iceberg_catalog, postgres_connection, trino_connection
from lakehouse.config import Settings
from lakehouse.credentials import Credentials
from lakehouse.errors import CatalogError, LakehouseError, TransformError
from lakehouse.names import checked
from lakehouse.nessie import NessieClient
from lakehouse.serving.publish import PublishReport, ServingPublisher
from lakehouse.transform import dbt, runs
from lakehouse.transform.window import BronzeWindow, committed_offsets, compute_window

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

log = logging.getLogger(__name__)

BRANCH_PREFIX = "transform_"


@dataclass
class RunReport:
    """What a run did, for the CLI and for tests."""

    run_id: str
    outcome: str
    seconds: float = 0.0
    window: BronzeWindow | None = None
    nodes: list[runs.NodeResult] = field(default_factory=list)
    counts: dict[str, int | None] = field(default_factory=dict)
    main_before: str | None = None
    main_after: str | None = None
    error: str | None = None
    serving: PublishReport | None = None
    serving_error: str | None = None

    @property
    def branch(self) -> str:
        return branch_of(self.run_id)

    @property
    def failed_nodes(self) -> list[runs.NodeResult]:
        return [n for n in self.nodes if n.failed]


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%d_%H%M%S}_{secrets.token_hex(3)}"


def branch_of(run_id: str) -> str:
    """The Nessie branch and the Trino catalog of a run share this name."""
    return f"{BRANCH_PREFIX}{checked('run id', run_id)}"


class TransformRunner:
    def __init__(
        self,
        settings: Settings,
        credentials: Credentials,
        *,
        quiet: bool = False,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.settings = settings
        self.credentials = credentials
        self.quiet = quiet
        self.prefix = settings.transform.schema_prefix
        # What "now" is for the clock-skew rule (tests move it on).
        self.clock = clock

    def run(self, *, full_refresh: bool = False, force: bool = False) -> RunReport:
        """One run; returns its report (outcome published, failed or up_to_date)."""
        conn = postgres_connection(self.settings, self.credentials)
        conn.autocommit = True
        try:
            runs.ensure_schema(conn)
            registry.ensure_schema(conn)
            runs.acquire_lock(conn)
            report = RunReport(run_id=new_run_id(), outcome="running")
            runs.start(
                conn,
                report.run_id,
                full_refresh=full_refresh,
                branch=report.branch,
                schema_prefix=self.prefix,
            )
            started = time.monotonic()
            try:
                self._run(conn, report, full_refresh=full_refresh, force=force)
            except LakehouseError as exc:
                report.outcome, report.error = "error", exc.message
                raise
            finally:
                report.seconds = time.monotonic() - started
                runs.finish(
                    conn,
                    report.run_id,
                    outcome=report.outcome,
                    seconds=report.seconds,
                    window=report.window.as_dbt_var() if report.window else None,
                    trino_catalog=report.branch if report.outcome == "failed" else None,
                    main_before=report.main_before,
                    main_after=report.main_after,
                    nodes=report.nodes,
                    counts=report.counts,
                    error=report.error,
                )
            if report.outcome == "published" and self.settings.serving.publish_after_transform:
                self._serve(report, full_refresh=full_refresh)
            return report
        finally:
            conn.close()

    def _serve(self, report: RunReport, *, full_refresh: bool) -> None:
        """Bring the run into serving. Main already has it, so a failure here fails
        nothing: the next run (or `lakehouse serve publish`) serves what is pending."""
        try:
            report.serving = ServingPublisher(self.settings, self.credentials).publish(
                full_refresh=full_refresh
            )
        except Exception as exc:  # any failure: serving catches up on the next publish
            report.serving_error = str(exc)
            log.warning("run %s: serving publish failed, pending: %s", report.run_id, exc)

    def _run(self, conn: Any, report: RunReport, *, full_refresh: bool, force: bool) -> None:
        with NessieClient(self.settings) as nessie:
            self._drop_orphan_catalogs(nessie)
            branch = nessie.create_branch(report.branch, "main")
            report.main_before = branch.hash
            try:
                report.window = window = self._window(
                    report.branch, conn, full_refresh=full_refresh
                )
            except LakehouseError:
                nessie.delete_branch(report.branch)  # nothing to inspect yet
                raise
            if not (full_refresh or force or window.has_work):
                nessie.delete_branch(report.branch)
                report.outcome, report.main_after = "up_to_date", report.main_before
                return
            self._create_catalog(report.branch)
            result = dbt.build(
                self.settings,
                password=self.credentials.trino_passwords[self.settings.transform.trino_user],
                catalog=report.branch,
                dbt_vars={
                    "run_id": report.run_id,
                    "bronze_window": window.as_dbt_var(),
                    "max_future_minutes": self.settings.transform.max_future_minutes,
                    "schema_prefix": self.prefix,
                },
                full_refresh=full_refresh,
                quiet=self.quiet,
            )
            report.nodes = result.nodes
            report.counts = {
                "bronze": result.rows("readings_checked"),
                "silver": result.rows("readings"),
                "quarantine": result.rows("readings_quarantine"),
            }
            if not result.success:
                report.outcome = "failed"
                report.error = result.error or _summary(report.failed_nodes)
                return
            merged = nessie.merge(
                report.branch,
                "main",
                message=f"transform {report.run_id}: publish silver, gold and platinum",
            )
            report.main_after = merged.hash
            report.outcome = "published"
            audit.record(
                conn, "transform", "publish", report.run_id,
                detail={"branch": report.branch, "main_before": report.main_before,
                        "main_after": report.main_after, "full_refresh": full_refresh,
                        "schema_prefix": self.prefix},
            )  # fmt: skip
            self._drop_catalog(report.branch)
            nessie.delete_branch(report.branch)

    def _window(self, branch: str, conn: Any, *, full_refresh: bool) -> BronzeWindow:
        catalog = iceberg_catalog(self.settings, self.credentials, ref=branch, s3_key="reader")
        bronze_name = f"{self.prefix}bronze.readings"
        if not catalog.table_exists(bronze_name):
            raise TransformError(f"there is no {bronze_name} table to transform")
        bronze = catalog.load_table(bronze_name)
        files = bronze.scan(row_filter="source_topic is null", selected_fields=("batch_id",))
        batch_ids = {b for b in files.to_arrow().column("batch_id").to_pylist() if b}
        window = compute_window(
            committed=committed_offsets(bronze.properties),
            progress=self._progress(catalog),
            file_batches=batch_ids,
            registry=runs.registry_version(conn),
            full_refresh=full_refresh,
        )
        now = self.clock()
        return replace(window, now=now, held_back_due=self._held_back_due(catalog, now))

    def _held_back_due(self, catalog: Catalog, now: datetime) -> bool:
        """Whether the quarantine holds readings stamped ahead of the clock whose time
        has come (see the dbt macro held_back_due)."""
        name = f"{self.prefix}silver.readings_quarantine"
        if not catalog.table_exists(name):
            return False
        due = now + timedelta(minutes=self.settings.transform.max_future_minutes)
        rows = catalog.load_table(name).scan(
            row_filter=f"failed_rule == 'ts_in_future' and ts <= '{due.isoformat()}'",
            selected_fields=("seq",),
            limit=1,
        )
        return bool(rows.to_arrow().num_rows)

    def _progress(self, catalog: Catalog) -> dict[str, int | None]:
        name = f"{self.prefix}silver.bronze_progress"
        if not catalog.table_exists(name):
            return {}
        rows = catalog.load_table(name).scan(selected_fields=("stream", "position")).to_arrow()
        return dict(
            zip(rows.column("stream").to_pylist(), rows.column("position").to_pylist(), strict=True)
        )

    def trino_cursor(self) -> Any:
        """A cursor on the lake as the transform's principal."""
        return trino_connection(
            self.settings, user=self.settings.transform.trino_user, credentials=self.credentials
        ).cursor()

    def _trino(self) -> Any:
        return trino_connection(
            self.settings, catalog="system", user=self.settings.transform.trino_user,
            credentials=self.credentials,
        ).cursor()  # fmt: skip

    def _create_catalog(self, branch: str) -> None:
        from lakehouse.stack.trino import lake_catalog_properties

        properties = lake_catalog_properties(self.settings, ref=branch)
        connector = properties.pop("connector.name")
        assignments = ", ".join(
            f"\"{key}\" = '{value.replace(chr(39), chr(39) * 2)}'"
            for key, value in properties.items()
        )
        cursor = self._trino()
        name = checked("catalog", branch)
        cursor.execute(f'create catalog "{name}" using {connector} with ({assignments})')
        cursor.fetchall()

    def _drop_catalog(self, name: str) -> None:
        cursor = self._trino()
        cursor.execute(f'drop catalog if exists "{checked("catalog", name)}"')
        cursor.fetchall()

    def _drop_orphan_catalogs(self, nessie: NessieClient) -> None:
        """Catalogs of runs whose branch is gone (discarded) are dropped."""
        branches = {ref.name for ref in nessie.references()}
        cursor = self._trino()
        cursor.execute("show catalogs")
        for (name,) in cursor.fetchall():
            if name.startswith(BRANCH_PREFIX) and name not in branches:
                self._drop_catalog(name)

    def discard(self, run_id: str) -> None:
        """Drop a kept (failed) run's catalog and branch."""
        branch = branch_of(run_id)
        self._drop_catalog(branch)
        with NessieClient(self.settings) as nessie:
            try:
                nessie.delete_branch(branch)
            except CatalogError as exc:
                raise TransformError(f"run {run_id} has no branch {branch}: {exc.message}") from exc


def _summary(nodes: list[runs.NodeResult]) -> str:
    names = [n.node.split(".", 2)[-1] for n in nodes]
    return f"{len(names)} node(s) failed: {', '.join(names)}" if names else "dbt build failed"
