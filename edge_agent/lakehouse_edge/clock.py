"""Refuse to stamp readings with an obviously wrong clock.

A Pi has no battery-backed clock: until NTP answers it may believe it is 1970 or the
time it last shut down. The rule: the wall clock must be after EARLIEST (2025-01-01)
and not earlier than the newest timestamp this agent already stamped (persisted in
the state file). Readings sampled while the clock is wrong are not queued; they are
counted in `status` as `clock_skipped`.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone

EARLIEST = datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp()


class ClockGuard:
    def __init__(self, state_path: str) -> None:
        self.state_path = state_path
        self.newest = self._load()
        self.skipped = 0

    def _load(self) -> float:
        try:
            with open(self.state_path) as handle:
                return float(handle.read().strip() or 0)
        except (OSError, ValueError):
            return 0.0

    def stamp(self) -> "str | None":
        """An RFC 3339 UTC timestamp for now, or None if the clock cannot be trusted."""
        now = time.time()
        if now < EARLIEST or now < self.newest:
            self.skipped += 1
            return None
        if now - self.newest > 1.0:
            self.newest = now
            tmp = self.state_path + ".tmp"
            with open(tmp, "w") as handle:
                handle.write(repr(now))
            os.replace(tmp, self.state_path)
        stamp = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds")
        return stamp.replace("+00:00", "Z")
