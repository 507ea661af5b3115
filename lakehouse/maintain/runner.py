"""One maintenance pass: compaction, garbage collection (when due) and retention.

A pass holds the maintenance lock, so two never overlap (and a backup never sees files
vanish). Each part is independent: a failure in one is recorded and the others still
run. What a pass did is logged and recorded in PostgreSQL (lakehouse.maintain.records).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from lakehouse import transform_runs as runs
from lakehouse.bronze_offsets import committed_offsets
from lakehouse.clients import (
    iceberg_catalog,
    iceberg_catalog_properties,
    kafka_config,
    nessie_http,
    postgres_connection,
    trino_connection,
)
from lakehouse.config import Settings
from lakehouse.credentials import Credentials
from lakehouse.maintain import records, retention
from lakehouse.maintain.compact import compact_table, lake_tables, policy_for
from lakehouse.maintain.gc import ReachableFiles, object_key, sweep
from lakehouse.maintain.live import NessieWalker, live_metadata
from lakehouse.maintain.report import MaintenanceReport
from lakehouse.maintain.rewrite import compact_streaming_table
from lakehouse.nessie import NessieClient
from lakehouse.registry import ensure_schema as ensure_registry
from lakehouse.s3 import s3_client

log = logging.getLogger(__name__)

# Silver and up are compacted between transform runs: a pass waits this long for a gap.
# (Trying once, a pass under steady load almost always met a run and compacted nothing.)
LOCK_WAIT_SECONDS = 120.0


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A reconcile takes minutes: a branch of one made this long ago was left by one killed.
RECONCILE_BRANCH_HOURS = timedelta(hours=6)


class Maintainer:
    """Runs passes; keeps what garbage collection learnt between them."""

    def __init__(
        self,
        settings: Settings,
        credentials: Credentials,
        *,
        schema_prefix: str = "",
        clock: Any = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.credentials = credentials
        self.schema_prefix = schema_prefix
        self.clock = clock
        self._reachable: ReachableFiles | None = None
        self._last_gc: float | None = None

    def run(
        self,
        *,
        compact: bool = True,
        gc: bool | None = None,
        retention: bool = True,
        dry_run: bool = False,
        gc_grace: timedelta | None = None,
        history_retention: timedelta | None = None,
    ) -> MaintenanceReport:
        """One pass. `gc=None`: collect garbage when the last collection is old enough."""
        started = time.monotonic()
        report = MaintenanceReport(
            run_id=f"{self.clock():%Y%m%d_%H%M%S}_m", started_at=self.clock()
        )
        conn = postgres_connection(self.settings, self.credentials)
        conn.autocommit = True
        try:
            records.ensure_schema(conn)
            runs.ensure_schema(conn)
            ensure_registry(conn)
            records.acquire_lock(conn)
            report.run_id = self._unique_id(conn, report.run_id)
            if compact:
                self._compact(conn, report)
            if gc is None:
                every = self.settings.maintain.gc_every_seconds
                gc = every > 0 and (
                    self._last_gc is None or time.monotonic() - self._last_gc >= every
                )
            if gc:
                self._collect(conn, report, dry_run, gc_grace, history_retention)
            if retention and not dry_run:
                self._retain(conn, report)
            report.finished_at = self.clock()
            report.seconds = time.monotonic() - started
            if not dry_run:
                records.record(conn, report)
        finally:
            conn.close()
        return report

    def _unique_id(self, conn: Any, run_id: str) -> str:
        taken = conn.execute(
            "select count(*) from maintenance.runs where run_id like %s", (f"{run_id}%",)
        ).fetchone()[0]
        return run_id if not taken else f"{run_id}{taken + 1}"

    def _compact(self, conn: Any, report: MaintenanceReport) -> None:
        cursor = trino_connection(
            self.settings, user=self.settings.maintain.trino_user, credentials=self.credentials
        ).cursor()
        try:
            tables = lake_tables(cursor, self.settings, self.schema_prefix)
        except Exception as exc:
            report.fail("compaction", exc)
            return
        streaming = [(s, t) for s, t in tables if _is_bronze(s)]
        built = [(s, t) for s, t in tables if not _is_bronze(s)]
        if streaming:
            catalog = iceberg_catalog(
                self.settings, self.credentials, s3_key="maintain", principal="maintain"
            )
        for schema, table in streaming:
            try:
                policy = policy_for(self.settings, schema, table)
                report.tables.append(
                    compact_streaming_table(
                        catalog.load_table(f"{schema}.{table}"), f"{schema}.{table}", policy
                    )
                )
            except Exception as exc:
                report.fail(f"compaction of {schema}.{table}", exc)
        if not built:
            return
        # Silver and up change only through a transform run's merge, which would conflict
        # with a compaction committed on main meanwhile: compact them between runs.
        if not runs.lock_within(conn, LOCK_WAIT_SECONDS):
            log.info("a transform run held its lock for %.0f s: silver and up are compacted "
                     "next pass", LOCK_WAIT_SECONDS)  # fmt: skip
            return
        try:
            for schema, table in built:
                try:
                    policy = policy_for(self.settings, schema, table)
                    report.tables.append(compact_table(cursor, schema, table, policy))
                except Exception as exc:
                    report.fail(f"compaction of {schema}.{table}", exc)
        finally:
            runs.unlock(conn)

    def gc_cutoff(self, conn: Any, grace: timedelta) -> datetime:
        """Files written after this may belong to a commit still to come."""
        cutoff: datetime = self.clock() - grace
        # A transform run in flight writes files on its branch before committing them.
        row = conn.execute(
            "select min(started_at) from transform.runs where outcome = 'running' "
            "and started_at > now() - interval '1 day'"
        ).fetchone()
        if row and row[0] is not None:
            cutoff = min(cutoff, row[0])
        return cutoff

    def _collect(
        self,
        conn: Any,
        report: MaintenanceReport,
        dry_run: bool,
        grace: timedelta | None,
        history: timedelta | None,
    ) -> None:
        s = self.settings.maintain
        grace = grace if grace is not None else timedelta(seconds=s.gc_grace_seconds)
        history = history if history is not None else timedelta(hours=s.history_retention_hours)
        try:
            # The cutoff is taken before the mark: whatever a writer commits meanwhile
            # was written after it.
            cutoff = self.gc_cutoff(conn, grace)
            report.gc_cutoff = cutoff
            # History an earlier collection let go stays gone: its files are deleted, so
            # a longer retention now starts where that one stopped.
            history_from = max(self.clock() - history, records.collected_before(conn) or _EPOCH)
            report.gc_history_from = history_from
            walker = NessieWalker(
                nessie_http(self.settings, self.credentials, "maintain", timeout=60.0)
            )
            try:
                live = live_metadata(walker, history_from)
            finally:
                walker.close()
            reachable = self._reachable_files()
            files = reachable.of_all(live.locations)
            reachable.forget_except(live.locations)
            bucket = self.settings.minio.bucket
            live_keys = {object_key(location, bucket) for location in files}
            report.gc = sweep(
                s3_client(self.settings, self.credentials, "maintain"),
                bucket=bucket,
                prefix=f"{self.settings.nessie.warehouse}/",
                live_keys=live_keys,
                cutoff=cutoff,
                dry_run=dry_run,
            )
            self._last_gc = time.monotonic()
            log.info(
                "garbage collection: %d references, %d commits walked, %d live files; "
                "%s %d unreachable files (%d bytes); %d newer than the cutoff kept",
                len(live.references), live.commits, report.gc.live_files,
                "would delete" if dry_run else "deleted", report.gc.deleted_files,
                report.gc.deleted_bytes, report.gc.young_files,
            )  # fmt: skip
        except Exception as exc:
            report.fail("garbage collection", exc)

    def _reachable_files(self) -> ReachableFiles:
        if self._reachable is None:
            from pyiceberg.io import load_file_io

            properties = iceberg_catalog_properties(
                self.settings, self.credentials, s3_key="maintain"
            )
            self._reachable = ReachableFiles(load_file_io(properties))
        return self._reachable

    def _retain(self, conn: Any, report: MaintenanceReport) -> None:
        s = self.settings.maintain
        now = self.clock()
        try:
            with NessieClient(self.settings, self.credentials, principal="maintain") as nessie:
                report.branches_deleted = retention.expire_failed_branches(
                    conn, nessie, older_than=now - timedelta(days=s.failed_branch_days)
                ) + retention.expire_reconcile_branches(
                    nessie, older_than=now - RECONCILE_BRANCH_HOURS
                )
        except Exception as exc:
            report.fail("branch retention", exc)
        try:
            report.receipts_deleted = retention.delete_old_receipts(
                conn, older_than=now - timedelta(days=s.receipts_days)
            )
            if report.receipts_deleted:
                log.info("deleted %d upload receipts past retention", report.receipts_deleted)
        except Exception as exc:
            report.fail("receipt retention", exc)
        try:
            for risk in self._kafka_risks(now):
                report.warnings.append(risk.describe(now))
                log.warning("Kafka retention: %s", risk.describe(now))
        except Exception as exc:
            report.fail("Kafka retention check", exc)

    def _kafka_risks(self, now: datetime) -> list[retention.PartitionRisk]:
        topic = self.settings.kafka.topic
        catalog = iceberg_catalog(
            self.settings, self.credentials, s3_key="maintain", principal="maintain"
        )
        # The stack's own consumers write this table from this topic.
        table = catalog.load_table(f"{self.settings.ingest.namespace}.readings")
        committed = committed_offsets(table.properties).get(topic, {})
        return retention.kafka_expiry_risks(
            kafka_config(self.settings, "admin", credentials=self.credentials),
            topic,
            committed,
            warning=timedelta(hours=self.settings.maintain.kafka_warning_hours),
            now=now,
        )


def _is_bronze(schema: str) -> bool:
    """Consumers commit to bronze every few seconds (see lakehouse.maintain.rewrite)."""
    return schema == "bronze" or schema.endswith("_bronze")


def describe(report: MaintenanceReport) -> str:
    """One paragraph for the terminal."""
    compacted = [t for t in report.tables if t.action != "none"]
    lines = [
        f"maintenance {report.run_id}: {report.outcome} in {report.seconds:.1f} s; "
        f"{len(compacted)} of {len(report.tables)} table(s) compacted"
    ]
    lines += [
        f"  {t.table}: {t.action}, {t.before.files} → {t.after.files} data files, "
        f"{t.before.bytes} → {t.after.bytes} bytes, {t.before.manifests} → "
        f"{t.after.manifests} manifests"
        for t in compacted
    ]
    if report.gc is not None:
        lines.append(
            f"  garbage collection: {report.gc.deleted_files} file(s), "
            f"{report.gc.deleted_bytes} bytes deleted; {report.gc.live_files} live"
        )
    if report.branches_deleted:
        lines.append(f"  branches deleted: {', '.join(report.branches_deleted)}")
    if report.receipts_deleted:
        lines.append(f"  upload receipts deleted: {report.receipts_deleted}")
    lines += [f"  warning: {w}" for w in report.warnings]
    if report.error:
        lines.append(f"  error: {report.error}")
    return "\n".join(lines)


def release_memory() -> None:
    """Give back what a pass allocated and freed. Arrow's allocator keeps freed pages for
    reuse and glibc keeps the top of its heap, so a loop that once compacted a large
    partition would otherwise hold that peak for as long as it runs."""
    import contextlib
    import ctypes
    import gc as garbage

    import pyarrow

    garbage.collect()
    pyarrow.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
