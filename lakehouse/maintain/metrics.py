"""Prometheus metrics of the maintenance loop: passes, files per table, garbage
collected, receipts deleted, Kafka retention warnings."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge

if TYPE_CHECKING:
    from lakehouse.maintain.report import MaintenanceReport


class MaintenanceMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.passes = Counter("lakehouse_maintenance_passes", "Maintenance passes by outcome",
                              ["outcome"], registry=r)  # fmt: skip
        for outcome in ("done", "error"):
            self.passes.labels(outcome)
        self.pass_seconds = Gauge("lakehouse_maintenance_pass_seconds",
                                  "Duration of the last pass", registry=r)  # fmt: skip
        self.last_pass = Gauge("lakehouse_maintenance_last_pass_timestamp_seconds",
                               "Unix time the last pass ended", registry=r)  # fmt: skip
        self.data_files = Gauge("lakehouse_table_data_files",
                                "Data files of a table after the last pass", ["table"],
                                registry=r)  # fmt: skip
        self.data_bytes = Gauge("lakehouse_table_data_bytes",
                                "Bytes of a table's data files after the last pass", ["table"],
                                registry=r)  # fmt: skip
        self.compactions = Counter("lakehouse_maintenance_compactions",
                                   "Tables compacted", registry=r)  # fmt: skip
        self.gc_files = Counter("lakehouse_maintenance_gc_deleted_files",
                                "Unreachable files deleted", registry=r)  # fmt: skip
        self.gc_bytes = Counter("lakehouse_maintenance_gc_deleted_bytes",
                                "Bytes of unreachable files deleted", registry=r)  # fmt: skip
        self.receipts = Counter("lakehouse_maintenance_receipts_deleted",
                                "Upload receipts deleted past retention", registry=r)  # fmt: skip
        self.kafka_warnings = Gauge(
            "lakehouse_kafka_partitions_at_risk",
            "Partitions whose unconsumed messages expired or expire soon", registry=r,
        )  # fmt: skip

    def record(self, report: MaintenanceReport) -> None:
        self.passes.labels(report.outcome).inc()
        self.pass_seconds.set(report.seconds)
        self.last_pass.set(time.time())
        for table in report.tables:
            self.data_files.labels(table.table).set(table.after.files)
            self.data_bytes.labels(table.table).set(table.after.bytes)
            if table.action != "none":
                self.compactions.inc()
        if report.gc is not None:
            self.gc_files.inc(report.gc.deleted_files)
            self.gc_bytes.inc(report.gc.deleted_bytes)
        self.receipts.inc(report.receipts_deleted or 0)
        self.kafka_warnings.set(len(report.warnings))
