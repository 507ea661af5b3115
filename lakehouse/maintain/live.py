"""Which table metadata every live Nessie reference can still reach.

Nessie keeps one snapshot in each table's metadata: a table's history is the chain of
Nessie commits, each pointing at a metadata file. A metadata file is live when

- it is the current state of a table on any reference (branch or tag), or
- a commit of any reference newer than the history cutoff put it, or
- it is the state of a table as of the cutoff (time travel to the cutoff reads it).

Everything else was only reachable from expired commits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from lakehouse.errors import MaintenanceError

log = logging.getLogger(__name__)

PAGE_SIZE = 250


@dataclass
class LiveMetadata:
    """Metadata locations reachable from live references, and what was walked."""

    locations: set[str] = field(default_factory=set)
    references: list[str] = field(default_factory=list)
    commits: int = 0


class NessieWalker:
    """Reads references, entries and commit logs through Nessie's REST API v2 (`http`,
    from lakehouse.clients.nessie_http; closed with the walker)."""

    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        response = self._http.get(path, params=params)
        if response.status_code != 200:
            raise MaintenanceError(
                f"Nessie GET {path} answered HTTP {response.status_code}: {response.text[:300]}"
            )
        body: dict[str, Any] = response.json()
        return body

    def _pages(self, path: str, params: dict[str, Any], key: str) -> Any:
        token: str | None = None
        while True:
            page = self._get(path, {**params, "max-records": PAGE_SIZE} | (
                {"page-token": token} if token else {}
            ))  # fmt: skip
            yield from page.get(key) or []
            token = page.get("token")
            if not page.get("hasMore") or not token:
                return

    def references(self) -> list[tuple[str, str]]:
        """(name, hash) of every branch and tag."""
        refs = self._pages("/trees", {"fetch": "MINIMAL"}, "references")
        return [(ref["name"], ref["hash"]) for ref in refs]

    def table_states(self, ref: str) -> set[str]:
        """Metadata locations of every table on `ref` (`name` or `name@hash`)."""
        entries = self._pages(f"/trees/{ref}/entries", {"content": "true"}, "entries")
        return {
            entry["content"]["metadataLocation"]
            for entry in entries
            if entry.get("type") == "ICEBERG_TABLE" and entry.get("content")
        }

    def history(self, ref: str) -> Any:
        """(commit hash, commit time, metadata locations put) newest first."""
        for entry in self._pages(f"/trees/{ref}/history", {"fetch": "ALL"}, "logEntries"):
            meta = entry["commitMeta"]
            puts = {
                op["content"]["metadataLocation"]
                for op in entry.get("operations") or []
                if op.get("type") == "PUT"
                and (op.get("content") or {}).get("type") == "ICEBERG_TABLE"
            }
            yield meta["hash"], _instant(meta["commitTime"]), puts


def live_metadata(walker: NessieWalker, cutoff: datetime) -> LiveMetadata:
    """Every metadata location reachable from a live reference with `cutoff` as the
    oldest instant of history still readable."""
    live = LiveMetadata()
    for name, head in walker.references():
        live.references.append(name)
        live.locations |= walker.table_states(f"{name}@{head}")
        for commit, committed_at, puts in walker.history(f"{name}@{head}"):
            live.commits += 1
            if committed_at < cutoff:
                # The state as of the cutoff stays readable; older commits expire.
                live.locations |= walker.table_states(f"{name}@{commit}")
                break
            live.locations |= puts
    log.debug(
        "%d metadata files live on %d references (%d commits walked)",
        len(live.locations), len(live.references), live.commits,
    )  # fmt: skip
    return live


def _instant(text: str) -> datetime:
    # Nessie gives nanoseconds; Python keeps microseconds.
    head, _, rest = text.rstrip("Z").partition(".")
    fraction = (rest[:6] if rest else "0").ljust(6, "0")
    return datetime.fromisoformat(f"{head}.{fraction}+00:00")
