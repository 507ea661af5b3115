from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from lakehouse.backup.objects import download, list_objects, upload
from lakehouse.errors import BackupError


class FakeS3:
    """A bucket in a dict: lists two keys a page, downloads and uploads whole objects."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = dict(objects)
        self.downloads: list[str] = []

    def get_paginator(self, _: str) -> FakeS3:
        return self

    def paginate(self, Bucket: str) -> list[dict[str, Any]]:
        items = [{"Key": k, "Size": len(v)} for k, v in sorted(self.objects.items())]
        return [{"Contents": items[i : i + 2]} for i in range(0, len(items), 2)]

    def download_file(self, bucket: str, key: str, path: str) -> None:
        self.downloads.append(key)
        Path(path).write_bytes(self.objects[key])

    def upload_file(self, path: str, bucket: str, key: str) -> None:
        self.objects[key] = Path(path).read_bytes()


BUCKET = {
    "warehouse/t/data/a.parquet": b"aaaa",
    "warehouse/t/data/b.parquet": b"bb",
    "warehouse/t/metadata/00001.metadata.json": b"{}",
}


def test_objects_are_copied_once_privately_and_put_back_whole(tmp_path):
    source = FakeS3(BUCKET)
    listed = list_objects(source, "b")
    assert listed == {k: len(v) for k, v in BUCKET.items()}
    store = tmp_path / "objects"
    store.mkdir(mode=0o700)
    assert download(source, "b", listed, store) == 8
    # A second backup copies only what is new.
    source.objects["warehouse/t/data/c.parquet"] = b"c"
    source.downloads.clear()
    assert download(source, "b", list_objects(source, "b"), store) == 1
    assert source.downloads == ["warehouse/t/data/c.parquet"]
    for path in store.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    target = FakeS3({})
    upload(target, "b", listed, store)
    assert target.objects == BUCKET


def test_a_missing_object_or_a_key_leading_outside_fails_the_restore(tmp_path):
    store = tmp_path / "objects"
    store.mkdir()
    with pytest.raises(BackupError, match="missing"):
        upload(FakeS3({}), "b", {"warehouse/gone.parquet": 3}, store)
    with pytest.raises(BackupError, match="outside the backup"):
        download(FakeS3({"../x": b"1"}), "b", {"../x": 1}, store)
