"""One write-audit-publish run.

1. Take the lock and record the run (PostgreSQL, schema `transform`).
2. Branch `transform_<run id>` from main in Nessie; everything below happens there.
   (Work tables a lakehouse of an older layout keeps in silver are first moved to
   `internal` on main: lakehouse.transform.internal_tables.)
3. Read the bronze window on the branch (committed offsets minus silver's progress);
   with no new bronze rows and an unchanged registry, stop: main stays as it is.
4. Add a Trino catalog of the same name on the branch and `dbt build` into it. The data
   tests check the rows this run wrote; the reference tables (dimensions, seeds) are
   rebuilt, and every row tested, only when the registry or the dbt project changed.
   So a small run costs little however large the tables grow; the scheduled audit
   (`audit`) tests every row of main, and runs the project's unit tests.
5. Every test passed: merge the branch into main (one Nessie commit publishes all
   layers and the new progress at once), then drop the catalog and the branch.
   Anything failed: main is untouched; branch and catalog stay for inspection.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from lakehouse import audit, registry, servers
from lakehouse import transform_runs as runs
from lakehouse.branch_catalogs import (
    TRANSFORM_PREFIX,
    create_branch_catalog,
    drop_catalog,
    drop_orphan_catalogs,
)
from lakehouse.bronze_offsets import committed_offsets
from lakehouse.clients import iceberg_catalog, postgres_connection, trino_connection
from lakehouse.config import Settings
from lakehouse.contracts import INTERNAL_SCHEMA
from lakehouse.credentials import Credentials
from lakehouse.errors import CatalogError, LakehouseError, ServersAwayError, TransformError
from lakehouse.names import checked
from lakehouse.nessie import NessieClient
from lakehouse.serving.publish import PublishReport, ServingPublisher
from lakehouse.transform import dbt
from lakehouse.transform.internal_tables import move_to_internal
from lakehouse.transform.window import BronzeWindow, compute_window

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

log = logging.getLogger(__name__)

# How long an interrupted run waits for the servers to come back to clear its branch.
OUTAGE_WAIT_SECONDS = 180.0


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
    # Where the run's seconds went, phase by phase (see PHASES), in the order they ran.
    phases: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase of the run (a phase that runs twice adds up)."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.monotonic() - started

    @property
    def branch(self) -> str:
        return branch_of(self.run_id)

    @property
    def failed_nodes(self) -> list[runs.NodeResult]:
        return [n for n in self.nodes if n.failed]


# The phases a run's seconds are split into, in the order a run first enters them:
# the lock and the run record; an older layout moved (and, once the run has work,
# catalogs of discarded runs dropped); what bronze holds that silver has not processed
# (read on main); the branch; the run's Trino catalog; dbt's parse, models and tests;
# the merge into main; dropping the catalog and the branch; the serving publish.
PHASES = (
    "record", "prepare", "window", "branch", "catalog", "parse", "models", "tests",
    "merge", "cleanup", "serving",
)  # fmt: skip


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%d_%H%M%S}_{secrets.token_hex(3)}"


def branch_of(run_id: str) -> str:
    """The Nessie branch and the Trino catalog of a run share this name."""
    return f"{TRANSFORM_PREFIX}{checked('run id', run_id)}"


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
        self._schemas_ready = False
        # Set once main holds no work table of an older layout (nothing left to move).
        self._layout_current = False

    def run(self, *, full_refresh: bool = False, force: bool = False) -> RunReport:
        """One run; returns its report (outcome published, failed, interrupted or
        up_to_date). Raises ServersAwayError, having started nothing, while a server the
        run needs accepts no connection."""
        missing = servers.away(self.settings)
        if missing:
            raise ServersAwayError(f"{', '.join(missing)} not answering; no run started")
        report = self._recorded(
            lambda conn, report: self._run(conn, report, full_refresh=full_refresh, force=force),
            full_refresh=full_refresh,
        )
        if report.outcome == "published" and self.settings.serving.publish_after_transform:
            with report.phase("serving"):
                self._serve(report, full_refresh=full_refresh)
        return report

    def audit(self) -> RunReport:
        """Every data test over every row of main, and the project's unit tests, on a
        branch at main's commit (outcome audited or audit_failed). Main never changes;
        a failed audit keeps its branch and catalog for inspection, as a failed run does."""
        return self._recorded(self._audit, full_refresh=False)

    def _recorded(self, work: Callable[[Any, RunReport], None], *, full_refresh: bool) -> RunReport:
        """`work` under the transform lock, recorded in transform.runs."""
        started = time.monotonic()
        report = RunReport(run_id=new_run_id(), outcome="running")
        with report.phase("record"):
            conn = postgres_connection(self.settings, self.credentials)
        conn.autocommit = True
        try:
            with report.phase("record"):
                if not self._schemas_ready:  # once per process: the DDL is not free
                    runs.ensure_schema(conn)
                    registry.ensure_schema(conn)
                    self._schemas_ready = True
                runs.acquire_lock(conn)
                runs.start(
                    conn,
                    report.run_id,
                    full_refresh=full_refresh,
                    branch=report.branch,
                    schema_prefix=self.prefix,
                )
            try:
                work(conn, report)
            except LakehouseError as exc:
                report.outcome, report.error = "error", exc.message
                raise
            except Exception as exc:
                if report.outcome == "running":  # not merged: main never saw the run
                    self._interrupted_or_error(report, exc)
                raise
            finally:
                report.seconds = time.monotonic() - started
                kept = report.outcome in {"failed", "audit_failed"}
                runs.finish(
                    conn,
                    report.run_id,
                    outcome=report.outcome,
                    seconds=report.seconds,
                    window=report.window.as_dbt_var() if report.window else None,
                    trino_catalog=report.branch if kept else None,
                    main_before=report.main_before,
                    main_after=report.main_after,
                    nodes=report.nodes,
                    counts=report.counts,
                    error=report.error,
                    phases=report.phases,
                )
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
        with NessieClient(self.settings, self.credentials, principal="transform") as nessie:
            with report.phase("prepare"):
                self._move_internal_tables(conn, report.run_id)
            # The window is read on main: nothing but runs (under the lock) changes
            # silver's progress there, and bronze only grows, so the branch made from a
            # later main holds every row of the window. A run with nothing to do makes
            # neither a branch nor a catalog.
            with report.phase("window"):
                report.main_before = nessie.reference("main").hash
                report.window = window = self._window("main", conn, full_refresh=full_refresh)
            if not (full_refresh or force or window.has_work):
                report.outcome, report.main_after = "up_to_date", report.main_before
                return
            with report.phase("prepare"):
                self._drop_orphan_catalogs(nessie)
            with report.phase("branch"):
                report.main_before = nessie.create_branch(report.branch, "main").hash
            with report.phase("catalog"):
                self._create_catalog(report.branch)
            # A run tests the rows it wrote; one that rebuilds the reference tables tests
            # every row against them (a device gone from the registry fails it) and lets
            # the incremental models take on new columns (the project changed).
            rebuild_references = full_refresh or window.references_changed
            result = dbt.build(
                self.settings,
                password=self._password(),
                catalog=report.branch,
                dbt_vars=self._dbt_vars(
                    report.run_id,
                    window,
                    test_scope="all" if rebuild_references else "run",
                    columns_may_change=rebuild_references,
                ),
                # A small run leaves out the reference tables and the tests its other
                # tests imply (tag:implied); the audit runs them all.
                exclude=() if rebuild_references else ("tag:reference", "tag:implied"),
                unit_tests=False,
                full_refresh=full_refresh,
                quiet=self.quiet,
            )
            report.phases.update(result.phases)
            report.nodes = result.nodes
            report.counts = {
                "bronze": result.rows("readings_checked"),
                "silver": result.rows("readings"),
                "quarantine": result.rows("readings_quarantine"),
            }
            if not result.success:
                report.outcome = "failed"
                report.error = result.error or _summary(report.failed_nodes)
                self._unless_interrupted(nessie, report, result)
                return
            with report.phase("merge"):
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
            with report.phase("cleanup"):
                self._drop_catalog(report.branch)
                nessie.delete_branch(report.branch)

    def _unless_interrupted(
        self, nessie: NessieClient, report: RunReport, result: dbt.BuildResult
    ) -> None:
        """A build that failed because a server went away is no failure of the data:
        its branch and catalog are dropped (main never saw the run) and the next run
        does the same work again. Anything else stays `failed`, branch kept."""
        missing = servers.away(self.settings)
        messages = [result.error or ""] + [n.message or "" for n in report.failed_nodes]
        if not missing and not any(servers.is_outage_message(m) for m in messages):
            return
        if not self._cleared(report):  # the server stayed away: kept as a failed run
            return
        cause = f"{', '.join(missing)} went away" if missing else "a server went away"
        report.outcome = "interrupted"
        report.error = f"{cause} during the build ({report.error}); main is untouched"

    def _interrupted_or_error(self, report: RunReport, exc: Exception) -> None:
        """A run that raised before publishing: `interrupted` (its branch and catalog
        dropped) when a server went away, else `error`. Either way it is recorded."""
        said = f"{type(exc).__name__}: {str(exc)[:500]}"
        if (servers.is_outage(exc) or servers.away(self.settings)) and self._cleared(report):
            report.outcome = "interrupted"
            report.error = f"a server went away ({said}); main is untouched"
        else:
            report.outcome, report.error = "error", said

    def _cleared(self, report: RunReport) -> bool:
        """Drop an interrupted run's catalog and branch once the servers answer again
        (waiting up to OUTAGE_WAIT_SECONDS); False if they stay away."""
        deadline = time.monotonic() + OUTAGE_WAIT_SECONDS
        while True:
            try:
                servers.wait_until_answering(self.settings, max(0.0, deadline - time.monotonic()))
                self._drop_catalog(report.branch)
                with NessieClient(self.settings, self.credentials, principal="transform") as nessie:
                    if report.branch in {ref.name for ref in nessie.references()}:
                        nessie.delete_branch(report.branch)
                return True
            except Exception as exc:
                if not servers.is_outage(exc) or time.monotonic() >= deadline:
                    log.warning("run %s: branch of an interrupted run kept: %s",
                                report.run_id, exc)  # fmt: skip
                    return False
                time.sleep(2)

    def _audit(self, conn: Any, report: RunReport) -> None:
        with NessieClient(self.settings, self.credentials, principal="transform") as nessie:
            self._drop_orphan_catalogs(nessie)
            self._move_internal_tables(conn, report.run_id)
            branch = nessie.create_branch(report.branch, "main")
            report.main_before = report.main_after = branch.hash
            catalog = iceberg_catalog(
                self.settings,
                self.credentials,
                ref=report.branch,
                s3_key="reader",
                principal="transform",
            )
            if not catalog.table_exists(f"{self.prefix}silver.readings"):
                nessie.delete_branch(report.branch)
                raise TransformError(
                    "there is nothing to audit: no transform run has published yet",
                    fix="run `lakehouse transform` first",
                )
            self._create_catalog(report.branch)
            window = BronzeWindow(now=self.clock())
            result = dbt.build(
                self.settings,
                password=self._password(),
                catalog=report.branch,
                dbt_vars=self._dbt_vars(report.run_id, window, test_scope="all"),
                command="test",
                quiet=self.quiet,
            )
            report.phases.update(result.phases)
            report.nodes = result.nodes
            if not result.success:
                report.outcome = "audit_failed"
                report.error = result.error or _summary(report.failed_nodes)
                return
            report.outcome = "audited"
            self._drop_catalog(report.branch)
            nessie.delete_branch(report.branch)

    def audit_due(self, every: float) -> bool:
        """Whether an audit is `every` seconds overdue (0: never), once a run published."""
        if every <= 0:
            return False
        with postgres_connection(self.settings, self.credentials) as conn:
            runs.ensure_schema(conn)
            if runs.last_finished(conn, ("published",), self.prefix) is None:
                return False
            last = runs.last_finished(conn, ("audited", "audit_failed"), self.prefix)
        return last is None or (self.clock() - last).total_seconds() >= every

    def _password(self) -> str:
        return self.credentials.trino_passwords[self.settings.transform.trino_user]

    def _dbt_vars(
        self, run_id: str, window: BronzeWindow, *, test_scope: str, columns_may_change: bool = True
    ) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "bronze_window": window.as_dbt_var(),
            "max_future_minutes": self.settings.transform.max_future_minutes,
            "schema_prefix": self.prefix,
            "test_scope": test_scope,
            "columns_may_change": columns_may_change,
        }

    def _move_internal_tables(self, conn: Any, run_id: str) -> None:
        """Move the work tables an older layout kept in silver to `internal`, on main,
        before the run branches (see lakehouse.transform.internal_tables). Once main
        is found on the current layout, later runs of this process skip the check."""
        if self._layout_current:
            return
        main = iceberg_catalog(
            self.settings, self.credentials, s3_key="reader", principal="transform"
        )
        try:
            done = move_to_internal(main, self.prefix)
        except Exception as exc:  # pyiceberg's: the catalog refused; the next run goes on
            raise TransformError(
                f"moving the work tables from {self.prefix}silver to "
                f"{self.prefix}{INTERNAL_SCHEMA} failed: {exc}",
                fix="check that Nessie answers, then run `lakehouse transform` again",
            ) from exc
        if done:
            audit.record(
                conn, "transform", "move_work_tables", run_id,
                detail={"done": done, "schema_prefix": self.prefix},
            )  # fmt: skip
        self._layout_current = True

    def _window(self, ref: str, conn: Any, *, full_refresh: bool) -> BronzeWindow:
        catalog = iceberg_catalog(
            self.settings, self.credentials, ref=ref, s3_key="reader", principal="transform"
        )
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
            project=dbt.project_fingerprint(self.settings.transform.project_dir),
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
        name = f"{self.prefix}{INTERNAL_SCHEMA}.bronze_progress"
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
        create_branch_catalog(self._trino(), self.settings, branch)

    def _drop_catalog(self, name: str) -> None:
        drop_catalog(self._trino(), name)

    def _drop_orphan_catalogs(self, nessie: NessieClient) -> None:
        """Catalogs of runs whose branch is gone (discarded) are dropped."""
        drop_orphan_catalogs(
            self._trino(), TRANSFORM_PREFIX, lambda: {ref.name for ref in nessie.references()}
        )

    def discard(self, run_id: str) -> None:
        """Drop a kept (failed) run's catalog and branch."""
        branch = branch_of(run_id)
        self._drop_catalog(branch)
        with NessieClient(self.settings, self.credentials, principal="transform") as nessie:
            try:
                nessie.delete_branch(branch)
            except CatalogError as exc:
                raise TransformError(f"run {run_id} has no branch {branch}: {exc.message}") from exc


# What dbt reports when a query lost its server rather than failed on the data.
def _summary(nodes: list[runs.NodeResult]) -> str:
    names = [n.node.split(".", 2)[-1] for n in nodes]
    return f"{len(names)} node(s) failed: {', '.join(names)}" if names else "dbt build failed"
