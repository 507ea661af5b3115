"""What one maintenance pass did, as logged, recorded (records) and counted (metrics)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from lakehouse.errors import LakehouseError
from lakehouse.maintain.compact import TableResult
from lakehouse.maintain.gc import SweepResult

log = logging.getLogger(__name__)


@dataclass
class MaintenanceReport:
    run_id: str
    started_at: datetime
    finished_at: datetime | None = None
    outcome: str = "done"
    tables: list[TableResult] = field(default_factory=list)
    gc: SweepResult | None = None
    gc_cutoff: datetime | None = None
    # The oldest instant of main's history this collection kept readable.
    gc_history_from: datetime | None = None
    branches_deleted: list[str] = field(default_factory=list)
    receipts_deleted: int | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def fail(self, part: str, exc: Exception) -> None:
        message = exc.message if isinstance(exc, LakehouseError) else f"{type(exc).__name__}: {exc}"
        log.error("maintenance %s failed: %s", part, message)
        self.outcome = "error"
        self.error = f"{self.error}; {part}: {message}" if self.error else f"{part}: {message}"
