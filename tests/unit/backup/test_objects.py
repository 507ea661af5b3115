from __future__ import annotations

import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lakehouse.backup.objects import download, legacy_path, list_objects, object_path, upload
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


def test_a_missing_object_fails_the_restore(tmp_path):
    store = tmp_path / "objects"
    store.mkdir()
    with pytest.raises(BackupError, match="missing"):
        upload(FakeS3({}), "b", {"warehouse/gone.parquet": 3}, store)


def test_a_format_1_key_leading_outside_fails(tmp_path):
    store = tmp_path / "objects"
    store.mkdir()
    with pytest.raises(BackupError, match="outside the backup"):
        download(FakeS3({"../x": b"1"}), "b", {"../x": 1}, store, locate=legacy_path)


MARKERS = {
    # A directory marker beside the objects under it, as consoles and writers leave.
    "warehouse/bronze/readings_1/metadata/": b"",
    "warehouse/bronze/readings_1/metadata/00001.metadata.json": b"{}",
    # A key that is a prefix of others, and keys no file system takes as they are.
    "warehouse/a": b"1",
    "warehouse/a/b": b"22",
    "warehouse//double": b"3",
    "../up": b"4",
    "./here/../.": b"5",
    "x" * 300 + "/" + "y" * 300: b"6",
    "ünïcødé/ key with spaces %20": b"7",
}


def test_every_key_s3_allows_is_kept_and_put_back_exactly(tmp_path):
    store = tmp_path / "objects"
    store.mkdir(mode=0o700)
    source = FakeS3(MARKERS)
    listed = list_objects(source, "b")
    assert download(source, "b", listed, store) == sum(len(v) for v in MARKERS.values())
    assert all(p.is_relative_to(store) for p in store.rglob("*"))
    target = FakeS3({})
    upload(target, "b", listed, store)
    assert target.objects == MARKERS


# S3 keys: up to 1,024 bytes of UTF-8, any character but control characters.
KEYS = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=120).filter(
    lambda key: len(key.encode()) <= 1024
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(KEYS, st.binary(max_size=3), min_size=1, max_size=12))
def test_any_set_of_keys_round_trips(objects):
    with tempfile.TemporaryDirectory() as directory:
        store = Path(directory)
        source = FakeS3(objects)
        listed = list_objects(source, "b")
        download(source, "b", listed, store)
        assert len({object_path(store, key) for key in objects}) == len(objects)
        target = FakeS3({})
        upload(target, "b", listed, store)
        assert target.objects == objects
