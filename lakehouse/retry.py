"""Riding out an unreachable server: backoff, one log line per state change, a gauge.

A long-running process treats a server it cannot reach (MinIO, Nessie, Kafka,
PostgreSQL, Trino) as temporarily away: it logs once when the server goes away and
once when it is back, retries with exponential backoff and jitter, and keeps what it
holds. Errors that retrying cannot mend (bad configuration, a fenced batch, a bug)
are raised at once.

Worked example with the defaults (0.5 s doubling, capped at 30 s, ±20 % jitter): the
retries come about 0.5, 1, 2, 4, 8, 16, 30, 30 … seconds apart, so a server that is
back after 20 s is noticed within about 8 s of its return.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from lakehouse.errors import LakehouseError

T = TypeVar("T")

# Raised by mistakes in code or configuration, which no retry will mend.
PERMANENT: tuple[type[BaseException], ...] = (
    LakehouseError, TypeError, AttributeError, NameError, ImportError, NotImplementedError,
)  # fmt: skip


class Interrupted(LakehouseError):
    """The process was asked to stop while it waited for a server to come back."""


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts, in seconds."""

    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2

    def delay(self, attempt: int) -> float:
        """The delay after the `attempt`-th failure in a row (1 for the first)."""
        delay = self.initial
        for _ in range(attempt - 1):
            if delay >= self.cap:  # stop early: a long outage must not overflow a float
                break
            delay *= self.factor
        return min(delay, self.cap) * random.uniform(1 - self.jitter, 1 + self.jitter)

    def delays(self) -> Iterator[float]:
        attempt = 1
        while True:
            yield self.delay(attempt)
            attempt += 1


class Outage:
    """Availability of one dependency as seen by one process.

    Logs one line when it becomes unavailable and one when it is back, and calls
    `on_change(available)` on each change (to set a metric).
    """

    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.what = what
        self.log = logger
        self.on_change = on_change
        self.down_since: float | None = None
        self.attempts = 0

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException) -> None:
        self.attempts += 1
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.log.warning(
                "%s unavailable (%s: %s); retrying with backoff",
                self.what, type(exc).__name__, str(exc)[:300],
            )  # fmt: skip
            if self.on_change is not None:
                self.on_change(False)

    def recovered(self) -> None:
        if self.down_since is None:
            return
        self.log.info(
            "%s available again after %.1f s (%d retries)",
            self.what, time.monotonic() - self.down_since, self.attempts,
        )  # fmt: skip
        self.down_since = None
        self.attempts = 0
        if self.on_change is not None:
            self.on_change(True)


def retry_transient(
    action: Callable[[], T],
    *,
    outage: Outage,
    stop: threading.Event | None = None,
    backoff: Backoff | None = None,
    permanent: tuple[type[BaseException], ...] = PERMANENT,
    before_retry: Callable[[], object] | None = None,
) -> T:
    """Call `action` until it succeeds; raises what is permanent, or Interrupted on `stop`."""
    for delay in (backoff or Backoff()).delays():
        try:
            result = action()
        except permanent:
            raise
        except Exception as exc:  # everything else counts as the server being away
            outage.failed(exc)
            if stop is not None:
                if stop.wait(delay):
                    raise Interrupted(f"stopped while {outage.what} was unavailable") from exc
            else:
                time.sleep(delay)
            if before_retry is not None:
                try:
                    before_retry()
                except permanent:
                    raise
                except Exception as again:  # still away; the next attempt will tell
                    outage.log.debug("%s: %s", outage.what, again)
            continue
        outage.recovered()
        return result
    raise AssertionError("unreachable")  # pragma: no cover - delays() never ends
