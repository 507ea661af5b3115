from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lakehouse.errors import MaintenanceError
from lakehouse.maintain.gc import ReachableFiles, object_key, sweep
from lakehouse.maintain.live import LiveMetadata, _instant, live_metadata

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class FakeS3:
    """Lists the objects it was given (two per page) and records deletions."""

    def __init__(self, objects: dict[str, tuple[int, datetime]]) -> None:
        self.objects = objects
        self.deleted: list[str] = []

    def get_paginator(self, _: str) -> FakeS3:
        return self

    def paginate(self, Bucket: str, Prefix: str) -> list[dict[str, Any]]:
        items = [
            {"Key": key, "Size": size, "LastModified": at}
            for key, (size, at) in sorted(self.objects.items())
            if key.startswith(Prefix)
        ]
        return [{"Contents": items[i : i + 2]} for i in range(0, len(items), 2)]

    def delete_objects(self, Bucket: str, Delete: dict[str, Any]) -> dict[str, Any]:
        self.deleted += [item["Key"] for item in Delete["Objects"]]
        return {}


OLD, YOUNG = NOW - timedelta(hours=2), NOW - timedelta(minutes=5)
OBJECTS = {
    "wh/ns/t/data/live.parquet": (10, OLD),
    "wh/ns/t/data/dead.parquet": (20, OLD),
    "wh/ns/t/metadata/dead.metadata.json": (3, OLD),
    "wh/ns/t/data/young.parquet": (40, YOUNG),
    "wh/not-a-table-file.txt": (5, OLD),
    "other/ns/t/data/dead.parquet": (7, OLD),
}


def test_sweep_deletes_only_old_unreachable_table_files_under_the_prefix():
    s3 = FakeS3(dict(OBJECTS))
    result = sweep(s3, bucket="b", prefix="wh/", live_keys={"wh/ns/t/data/live.parquet"},  # type: ignore[arg-type]
                   cutoff=NOW - timedelta(hours=1))  # fmt: skip
    assert sorted(s3.deleted) == [
        "wh/ns/t/data/dead.parquet",
        "wh/ns/t/metadata/dead.metadata.json",
    ]
    assert (result.listed_files, result.deleted_files, result.deleted_bytes) == (5, 2, 23)
    assert result.young_files == 1


def test_a_dry_run_deletes_nothing_and_says_what_would_go():
    s3 = FakeS3(dict(OBJECTS))
    result = sweep(s3, bucket="b", prefix="wh/", live_keys=set(), cutoff=NOW,  # type: ignore[arg-type]
                   dry_run=True)  # fmt: skip
    assert s3.deleted == []
    assert result.deleted_files == 4


def test_object_keys_come_from_s3_locations_of_the_bucket_only():
    assert object_key("s3://lakehouse/wh/a/data/f.parquet", "lakehouse") == "wh/a/data/f.parquet"
    assert object_key("s3a://lakehouse/k", "lakehouse") == "k"
    with pytest.raises(MaintenanceError):
        object_key("s3://elsewhere/k", "lakehouse")
    with pytest.raises(MaintenanceError):
        object_key("/local/file", "lakehouse")


def test_nessie_instants_keep_microseconds():
    assert _instant("2026-12-03T21:05:50.545427024Z") == datetime(
        2026, 12, 3, 21, 5, 50, 545427, tzinfo=UTC
    )
    assert _instant("2026-12-03T21:05:50Z") == datetime(2026, 12, 3, 21, 5, 50, tzinfo=UTC)


class FakeWalker:
    """main: c3 (now) → c2 (1 h ago) → c1 (3 h ago); branch b at c1."""

    def references(self) -> list[tuple[str, str]]:
        return [("main", "c3"), ("b", "c1")]

    def table_states(self, ref: str) -> set[str]:
        return {"main@c3": {"m3"}, "main@c1": {"m1"}, "b@c1": {"m1"}}[ref]

    def history(self, ref: str) -> list[tuple[str, datetime, set[str]]]:
        log = [
            ("c3", NOW, {"m3"}),
            ("c2", NOW - timedelta(hours=1), {"m2"}),
            ("c1", NOW - timedelta(hours=3), {"m1"}),
            ("c0", NOW - timedelta(hours=4), {"m0"}),
        ]
        start = [c for c, _, _ in log].index(ref.split("@")[1])
        return log[start:]


def test_live_metadata_is_every_head_what_commits_since_the_cutoff_put_and_the_cutoff_state():
    live = live_metadata(FakeWalker(), NOW - timedelta(hours=2))  # type: ignore[arg-type]
    assert isinstance(live, LiveMetadata)
    # m0 was put before the cutoff and replaced by m1 before it: expired.
    assert live.locations == {"m3", "m2", "m1"}
    assert live.references == ["main", "b"]


def test_with_no_history_only_heads_are_live():
    live = live_metadata(FakeWalker(), NOW + timedelta(seconds=1))  # type: ignore[arg-type]
    assert live.locations == {"m3", "m1"}


def test_forgetting_metadata_forgets_the_manifests_only_it_referenced():
    reachable = ReachableFiles(io=None)  # type: ignore[arg-type]
    reachable._by_metadata = {
        "m/1.json": frozenset({"m/1.json", "m/a.avro", "d/1.parquet"}),
        "m/2.json": frozenset({"m/2.json", "m/a.avro", "m/b.avro", "d/2.parquet"}),
    }
    reachable._by_manifest = {
        "m/a.avro": frozenset({"m/a.avro", "d/1.parquet"}),
        "m/b.avro": frozenset({"m/b.avro", "d/2.parquet"}),
    }
    reachable.forget_except({"m/1.json"})
    assert list(reachable._by_metadata) == ["m/1.json"]
    assert list(reachable._by_manifest) == ["m/a.avro"]
