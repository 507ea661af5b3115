"""Garbage collection that is safe with Nessie: mark what live references reach, then
delete only table files that nothing live reaches and that are older than the cutoff.

Mark: every live metadata file (lakehouse.maintain.live) is read with everything it
references: earlier metadata files, statistics files, manifest lists, manifests and
data files. Sweep: the warehouse is listed; an object under a table's `data/` or
`metadata/` directory is deleted when it is not marked and was written before the
cutoff, which is the earlier of (the mark's start minus a grace period) and the start
of any transform run still in flight. A file a writer has not committed yet is younger
than that, so it is never deleted. If any live metadata cannot be read, nothing is.

Files are immutable, so what a metadata file or a manifest references is cached
across passes of a long-running process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from lakehouse.errors import MaintenanceError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from pyiceberg.io import FileIO

log = logging.getLogger(__name__)

DELETE_BATCH = 1000
TABLE_DIRECTORIES = ("/data/", "/metadata/")


@dataclass(frozen=True)
class SweepResult:
    listed_files: int
    listed_bytes: int
    live_files: int
    deleted_files: int
    deleted_bytes: int
    # Unreachable, but written after the cutoff: left for a later pass.
    young_files: int


def object_key(location: str, bucket: str) -> str:
    """`s3://bucket/key` (or s3a/s3n) → `key`."""
    scheme, sep, rest = location.partition("://")
    if not sep or not scheme.startswith("s3"):
        raise MaintenanceError(f"a table file outside S3: {location}")
    found_bucket, _, key = rest.partition("/")
    if found_bucket != bucket:
        raise MaintenanceError(f"a table file in bucket {found_bucket!r}, not {bucket!r}")
    return key


class ReachableFiles:
    """What table metadata references, file by file; cached (files never change)."""

    def __init__(self, io: FileIO) -> None:
        self.io = io
        self._by_metadata: dict[str, frozenset[str]] = {}
        self._by_manifest: dict[str, frozenset[str]] = {}

    def of_metadata(self, location: str) -> frozenset[str]:
        cached = self._by_metadata.get(location)
        if cached is not None:
            return cached
        from pyiceberg.serializers import FromInputFile

        try:
            metadata = FromInputFile.table_metadata(self.io.new_input(location))
        except Exception as exc:  # unreadable live metadata: deleting anything is unsafe
            raise MaintenanceError(
                f"cannot read live table metadata {location}: {exc}",
                fix="nothing was deleted; check MinIO and run maintenance again",
            ) from exc
        files = {location}
        files.update(entry.metadata_file for entry in metadata.metadata_log)
        files.update(stats.statistics_path for stats in metadata.statistics)
        files.update(stats.statistics_path for stats in metadata.partition_statistics)
        for snapshot in metadata.snapshots:
            if snapshot.manifest_list:
                files.add(snapshot.manifest_list)
            for manifest in snapshot.manifests(self.io):
                files |= self._of_manifest(manifest)
        result = frozenset(files)
        self._by_metadata[location] = result
        return result

    def _of_manifest(self, manifest: object) -> frozenset[str]:
        path: str = manifest.manifest_path  # type: ignore[attr-defined]
        cached = self._by_manifest.get(path)
        if cached is None:
            entries = manifest.fetch_manifest_entry(self.io, discard_deleted=False)  # type: ignore[attr-defined]
            cached = frozenset([path, *(entry.data_file.file_path for entry in entries)])
            self._by_manifest[path] = cached
        return cached

    def of_all(self, locations: Iterable[str]) -> set[str]:
        files: set[str] = set()
        for location in locations:
            files |= self.of_metadata(location)
        return files

    def forget_except(self, locations: set[str]) -> None:
        """Drop cached metadata no longer live (bounded memory in a long-running loop)."""
        for location in list(self._by_metadata):
            if location not in locations:
                del self._by_metadata[location]
        # A manifest stays cached while kept metadata references it (its set holds it).
        referenced: set[str] = set().union(*self._by_metadata.values())
        for path in list(self._by_manifest):
            if path not in referenced:
                del self._by_manifest[path]


def sweep(
    s3: S3Client,
    *,
    bucket: str,
    prefix: str,
    live_keys: set[str],
    cutoff: datetime,
    dry_run: bool = False,
) -> SweepResult:
    """Delete the unreachable table files under `prefix` written before `cutoff`."""
    listed = listed_bytes = young = 0
    doomed: list[tuple[str, int]] = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key, size = item["Key"], int(item["Size"])
            listed += 1
            listed_bytes += size
            if key in live_keys or not any(d in key for d in TABLE_DIRECTORIES):
                continue
            if item["LastModified"] >= cutoff:
                young += 1
                continue
            doomed.append((key, size))
    deleted = deleted_bytes = 0
    if not dry_run:
        started = time.monotonic()
        for start in range(0, len(doomed), DELETE_BATCH):
            batch = doomed[start : start + DELETE_BATCH]
            answer = s3.delete_objects(
                Bucket=bucket,
                Delete={"Objects": [{"Key": key} for key, _ in batch], "Quiet": True},
            )
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                raise MaintenanceError(
                    f"{len(errors)} file(s) could not be deleted, first "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}",
                    fix="check the maintenance key's MinIO policy; run maintenance again",
                )
            deleted += len(batch)
            deleted_bytes += sum(size for _, size in batch)
        if doomed:
            log.debug("deleted %d files in %.1f s", deleted, time.monotonic() - started)
    else:
        deleted, deleted_bytes = len(doomed), sum(size for _, size in doomed)
    return SweepResult(
        listed_files=listed,
        listed_bytes=listed_bytes,
        live_files=len(live_keys),
        deleted_files=deleted,
        deleted_bytes=deleted_bytes,
        young_files=young,
    )
