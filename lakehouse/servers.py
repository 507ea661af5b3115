"""Whether the servers the lake's jobs need answer at all, and whether an error was
caused by one of them going away.

A transform run or a reconcile needs Nessie (branches), Trino, PostgreSQL (the
registry and the run records) and the object store. When one is away (restarting, a
network blip), a job would fail on it; they ask here first, and again after a failure,
to tell an outage (wait and try again) from a real failure.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from lakehouse.config import Settings
from lakehouse.errors import ServersAwayError
from lakehouse.s3 import s3_endpoint

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 3.0
# What the clients' errors say when a server is away or still starting.
OUTAGE_MARKERS = (
    "connection refused", "no_nodes_available", "failed to establish a new connection",
    "max retries exceeded", "server refused connection", "connection reset",
    "remotedisconnected", "name or service not known", "service unavailable",
    "connection aborted", "server_starting_up", "server is starting",
    "server closed the connection", "connection is closed", "connection timed out",
    # Trino's HTTP port answers before its authenticators are loaded.
    "authenticators were not loaded",
)  # fmt: skip


def addresses(settings: Settings) -> dict[str, tuple[str, int]]:
    """Each server a run needs, by name: where it listens."""
    store = urlsplit(s3_endpoint(settings))
    default_port = 443 if store.scheme == "https" else 80
    return {
        "nessie": (settings.server_host("nessie"), settings.nessie.port),
        "trino": (settings.server_host("trino"), settings.trino.port),
        "postgres": (settings.server_host("postgres"), settings.postgres.port),
        "object store": (store.hostname or "", store.port or default_port),
    }


def away(settings: Settings) -> list[str]:
    """The servers of `addresses` that accept no connection right now."""
    return [name for name, (host, port) in addresses(settings).items() if not _accepts(host, port)]


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            return True
    except OSError:
        return False


def is_outage_message(message: str) -> bool:
    """Whether an error message tells of a server that is away or still starting."""
    lowered = message.lower()
    return any(marker in lowered for marker in OUTAGE_MARKERS)


def is_outage(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, tells of a server that went away."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ConnectionError) or is_outage_message(f"{type(seen).__name__}: {seen}"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def wait_until_answering(
    settings: Settings, timeout: float, report: Callable[[str], None] = log.info
) -> None:
    """Return once every server answers; report once which are away, and again when they
    are back. Raises ServersAwayError after `timeout` seconds."""
    missing = away(settings)
    if not missing:
        return
    report(f"waiting for {', '.join(missing)} (not answering)")
    deadline = time.monotonic() + timeout
    delay = 1.0
    while missing:
        if time.monotonic() >= deadline:
            raise ServersAwayError(
                f"{', '.join(missing)} still not answering after {timeout:.0f} s"
            )
        time.sleep(delay)
        delay = min(delay * 2, 10.0)
        missing = away(settings)
    report("every server answers again")
