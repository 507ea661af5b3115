"""Branches and merges through Nessie's REST API v2 (tables go through Iceberg REST)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from lakehouse.clients import nessie_http
from lakehouse.config import Settings
from lakehouse.credentials import Credentials, load
from lakehouse.errors import CatalogError, ReferenceConflictError
from lakehouse.names import checked


@dataclass(frozen=True)
class Reference:
    """A Nessie branch or tag at a commit hash."""

    name: str
    hash: str
    type: str = "BRANCH"

    def as_json(self) -> dict[str, str]:
        return {"type": self.type, "name": self.name, "hash": self.hash}


class NessieClient:
    """A small synchronous client for the reference operations the platform needs."""

    def __init__(
        self,
        settings: Settings,
        credentials: Credentials | None = None,
        *,
        principal: str = "lakehouse",
        timeout: float = 30.0,
    ) -> None:
        self._http = nessie_http(
            settings, credentials or load(settings), principal, timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NessieClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._http.request(method, path, **kwargs)
        if response.status_code == 409:
            raise ReferenceConflictError(f"Nessie: {_message(response)}")
        if response.status_code >= 400:
            raise CatalogError(
                f"Nessie {method} {path} failed with HTTP {response.status_code}: "
                f"{_message(response)}"
            )
        return response.json() if response.content else {}

    def reference(self, name: str) -> Reference:
        body = self._call("GET", f"/trees/{checked('branch', name)}")
        return _reference(body["reference"])

    def references(self) -> list[Reference]:
        body = self._call("GET", "/trees")
        return [_reference(ref) for ref in body.get("references", [])]

    def metadata_location(self, ref: str, table: str) -> str | None:
        """Where the Iceberg metadata of `table` ("namespace.name") on `ref` is; None
        when `ref` holds no such table. One small request: no table metadata is read."""
        path = f"/trees/{checked('branch', ref)}/contents/{_content_key(table)}"
        response = self._http.request("GET", path)
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise CatalogError(
                f"Nessie GET {path} failed with HTTP {response.status_code}: {_message(response)}"
            )
        location = response.json().get("content", {}).get("metadataLocation")
        return str(location) if location else None

    def create_branch(self, name: str, source: str = "main") -> Reference:
        """Create branch `name` at the current head of `source`."""
        head = self.reference(source)
        body = self._call(
            "POST",
            "/trees",
            params={"name": checked("branch", name), "type": "BRANCH"},
            json=head.as_json(),
        )
        return _reference(body["reference"])

    def merge(self, source: str, target: str = "main", message: str | None = None) -> Reference:
        """Merge every commit of `source` into `target` atomically; returns the new target."""
        source_ref = self.reference(source)
        target_ref = self.reference(target)
        payload: dict[str, Any] = {"fromRefName": source_ref.name, "fromHash": source_ref.hash}
        if message:
            payload["message"] = message
        self._call(
            "POST", f"/trees/{target_ref.name}@{target_ref.hash}/history/merge", json=payload
        )
        return self.reference(target)

    def delete_branch(self, name: str) -> None:
        ref = self.reference(name)
        self._call("DELETE", f"/trees/{ref.name}@{ref.hash}")


def _content_key(table: str) -> str:
    """A content key in a URL path: elements joined by dots (our names hold none)."""
    namespace, _, name = table.partition(".")
    return f"{checked('namespace', namespace)}.{checked('table', name)}"


def _reference(data: dict[str, Any]) -> Reference:
    return Reference(name=data["name"], hash=data["hash"], type=data.get("type", "BRANCH"))


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    return str(body.get("message") or body)[:300]
