"""Refuse to stamp readings with an obviously wrong clock.

A Pi has no battery-backed clock: until NTP answers it may believe it is 1970 or the
time it last shut down. The rule: the wall clock must be after EARLIEST (2025-01-01)
and not earlier than the newest timestamp this agent already stamped (persisted in
the state file), unless the kernel says the clock is synchronised: then a clock that
went back is the correction of an earlier jump forward, and it is trusted from then
on (otherwise one jump ahead would stop sampling until real time caught up).
Readings sampled while the clock is wrong are not queued; the caller counts them
(`clock_skipped` in `status`).
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone
from typing import Callable, Optional

log = logging.getLogger(__name__)

EARLIEST = datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp()
_TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised


def kernel_clock_synchronised() -> Optional[bool]:
    """What adjtimex(2) says of the system clock (None where it cannot be asked).

    ctypes is imported here: it is needed only when the clock went back, and the agent
    keeps its memory small on a Pi."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        timex = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        state = libc.adjtimex(timex)
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return bool(state != _TIME_ERROR)


class ClockGuard:
    def __init__(
        self,
        state_path: str,
        synchronised: Callable[[], Optional[bool]] = kernel_clock_synchronised,
    ) -> None:
        self.state_path = state_path
        self.synchronised = synchronised
        self.newest = self._load()

    def _load(self) -> float:
        try:
            with open(self.state_path) as handle:
                return float(handle.read().strip() or 0)
        except (OSError, ValueError):
            return 0.0

    def stamp(self) -> "str | None":
        """An RFC 3339 UTC timestamp for now, or None if the clock cannot be trusted."""
        now = time.time()
        if now < EARLIEST:
            return None
        if now < self.newest:
            if not self.synchronised():
                return None
            log.warning("the synchronised clock is %.0f s behind the newest reading stamped; "
                        "trusting it from now on", self.newest - now)  # fmt: skip
            self._save(now)
        elif now - self.newest > 1.0:
            self._save(now)
        stamp = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds")
        return stamp.replace("+00:00", "Z")

    def _save(self, now: float) -> None:
        self.newest = now
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as handle:
            handle.write(repr(now))
        os.replace(tmp, self.state_path)
