"""When the transform loop runs next: as soon as bronze has a new commit.

A run every fixed interval makes a reading wait half the interval, on average, before a
run even starts. The loop instead asks Nessie, every `poll` seconds, where bronze's
metadata is on main (one small request; nothing is read from the object store), and
starts a run as soon as it moved since the last run began. The interval stays as the
longest wait: the registry and readings held back for a clock running ahead change
nothing in bronze, and the next scheduled run picks them up.
"""

from __future__ import annotations

import logging
import threading
import time

from lakehouse.config import Settings
from lakehouse.credentials import Credentials
from lakehouse.nessie import NessieClient

log = logging.getLogger(__name__)


class BronzeCommits:
    """Whether bronze on main moved since `mark()` was last called."""

    def __init__(self, settings: Settings, credentials: Credentials) -> None:
        self.settings = settings
        self.credentials = credentials
        self.table = f"{settings.transform.schema_prefix}bronze.readings"
        self._marked: str | None = None
        self._client: NessieClient | None = None

    def location(self) -> str | None:
        """Bronze's metadata location on main; None when it cannot be told (no table
        yet, Nessie away): the loop then waits for its interval."""
        try:
            if self._client is None:
                self._client = NessieClient(
                    self.settings, self.credentials, principal="transform", timeout=5.0
                )
            return self._client.metadata_location("main", self.table)
        except Exception as exc:  # Nessie away or refusing: fall back to the interval
            log.debug("bronze location not read: %s", exc)
            self.close()
            return None

    def mark(self) -> None:
        """Remember where bronze is now (a run is about to read it)."""
        self._marked = self.location()

    def moved(self) -> bool:
        current = self.location()
        return current is not None and current != self._marked

    def wait(self, stop: threading.Event, longest: float, poll: float) -> None:
        """Return once bronze moved (checked every `poll` seconds), after `longest`
        seconds, or when `stop` is set. The first look comes after one `poll`: between
        two runs the lock stays free that long, so maintenance waiting to compact the
        layers runs write gets its turn even while bronze moves all the time."""
        deadline = time.monotonic() + longest
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            stop.wait(min(poll, left))
            if not stop.is_set() and self.moved():
                return

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
