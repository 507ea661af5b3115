"""The bucket's objects, copied to and from a backup's shared object directory.

S3 keys are not paths: `a/` (a zero-byte directory marker, which consoles and several
writers leave), `a` and `a/b` may all exist at once, as may `a//b`, `.` or `..`. So each
key is stored at a path of its own (`object_path`): every segment but the last becomes
a directory `d<segment>`, the last a file `f<segment>`, each percent-encoded; a segment
too long to be a file name is named by its hash (`d%g<sha256>`, a name encoding never
makes). Backups of format 1 kept keys as plain paths (`legacy_path`), which a marker
breaks; they are still restored.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from lakehouse.errors import BackupError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

WORKERS = 8
Progress = Callable[[int, int], None]


def list_objects(client: S3Client, bucket: str) -> dict[str, int]:
    """Every object of the bucket, key → size."""
    found: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            found[item["Key"]] = item["Size"]
    return found


Locate = Callable[[Path, str], Path]
# Room for the prefix within the usual 255-byte limit on a file name.
MAX_SEGMENT_BYTES = 200


def _segment(kind: str, segment: str) -> str:
    encoded = quote(segment, safe="")
    if len(encoded.encode()) > MAX_SEGMENT_BYTES:
        return f"{kind}%g{hashlib.sha256(segment.encode()).hexdigest()}"
    return f"{kind}{encoded}"


def object_path(store: Path, key: str) -> Path:
    """Where the object `key` is kept under `store`: one path per key, whatever the key."""
    *directories, name = key.split("/")
    return store.joinpath(*(_segment("d", d) for d in directories), _segment("f", name))


def legacy_path(store: Path, key: str) -> Path:
    """Where format-1 backups kept `key`: the key as a path under `store`."""
    path = (store / key).resolve()
    if not path.is_relative_to(store.resolve()):
        raise BackupError(f"object key {key!r} leads outside the backup")
    return path


def download(
    client: S3Client,
    bucket: str,
    objects: dict[str, int],
    store: Path,
    progress: Progress = lambda done, total: None,
    locate: Locate = object_path,
) -> int:
    """Copy what `store` lacks; returns the bytes copied. A key already there with the
    same size is the same object: keys are never rewritten with other content."""
    missing = {
        key: size for key, size in objects.items()
        if not _present(locate(store, key), size)
    }  # fmt: skip

    def fetch(key: str) -> None:
        target = locate(store, key)
        _private_parents(target, store.resolve())
        partial = target.with_name(f".{target.name}.partial")
        client.download_file(bucket, key, str(partial))
        os.chmod(partial, 0o600)
        if partial.stat().st_size != objects[key]:
            raise BackupError(f"{key}: {partial.stat().st_size} bytes read, {objects[key]} listed")
        partial.replace(target)

    _each(fetch, list(missing), progress)
    return sum(missing.values())


def upload(
    client: S3Client,
    bucket: str,
    objects: dict[str, int],
    store: Path,
    progress: Progress = lambda done, total: None,
    locate: Locate = object_path,
) -> None:
    def put(key: str) -> None:
        source = locate(store, key)
        if not _present(source, objects[key]):
            raise BackupError(f"object {key} is missing from {store} or has another size")
        client.upload_file(str(source), bucket, key)

    _each(put, list(objects), progress)


def _private_parents(path: Path, store: Path) -> None:
    # mkdir(parents=True) would leave the directories between with the umask's mode.
    missing = [d for d in path.relative_to(store).parents if not (store / d).exists()]
    for directory in reversed(missing):
        (store / directory).mkdir(mode=0o700, exist_ok=True)


def _present(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


def _each(work: Callable[[str], None], keys: list[str], progress: Progress) -> None:
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="objects") as pool:
        for done, _ in enumerate(pool.map(work, keys), start=1):
            if done % 500 == 0 or done == len(keys):
                progress(done, len(keys))
