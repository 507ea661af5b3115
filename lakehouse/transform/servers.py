"""Whether the servers a transform run needs answer at all.

A run needs Nessie (branches), Trino (dbt), PostgreSQL (the registry and the run
records) and the object store. When one is away (restarting, a network blip), a run
would fail on it and keep a branch that holds nothing worth inspecting; the runner asks
here first, and again after a failed build, to tell an outage from a real failure.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from lakehouse.config import Settings
from lakehouse.s3 import s3_endpoint

CONNECT_TIMEOUT = 3.0


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
