"""The bronze window: committed offsets minus silver's progress, files by hash."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from lakehouse.bronze_offsets import committed_offsets
from lakehouse.errors import TransformError
from lakehouse.transform.window import (
    PROJECT_STREAM,
    REGISTRY_STREAM,
    PartitionRange,
    compute_window,
    file_stream,
    kafka_stream,
)

SHA_A = "a" * 64
SHA_B = "b" * 64


def test_committed_offsets_are_read_from_every_topic_property():
    properties = {
        "lakehouse.kafka.offsets.readings": json.dumps({"0": 10, "1": 4}),
        "lakehouse.kafka.offsets.other": json.dumps({"2": 7}),
        "write.format.default": "parquet",
    }
    assert committed_offsets(properties) == {"readings": {0: 10, 1: 4}, "other": {2: 7}}


def test_first_run_takes_everything_committed():
    window = compute_window(
        committed={"readings": {0: 10, 1: 4}}, progress={}, file_batches=[SHA_A], registry=5
    )
    assert window.kafka == (
        PartitionRange("readings", 0, -1, 9),
        PartitionRange("readings", 1, -1, 3),
    )
    assert window.files == (SHA_A,)
    assert window.has_new_rows and window.registry_changed
    assert window.offsets_to_read == 14


def test_next_run_starts_after_the_recorded_progress():
    progress = {
        kafka_stream("readings", 0): 9,
        kafka_stream("readings", 1): 1,
        file_stream(SHA_A): None,
        REGISTRY_STREAM: 5,
        PROJECT_STREAM: 7,
    }
    window = compute_window(
        committed={"readings": {0: 10, 1: 4, 2: 1}},
        progress=progress,
        file_batches=[SHA_A, SHA_B],
        registry=5,
        project=7,
    )
    assert window.kafka == (
        PartitionRange("readings", 0, 9, 9),
        PartitionRange("readings", 1, 1, 3),
        PartitionRange("readings", 2, -1, 0),
    )
    assert window.kafka[0].is_empty and not window.kafka[1].is_empty
    assert window.files == (SHA_B,)
    assert not window.registry_changed and not window.references_changed
    assert window.as_dbt_var() == {
        "kafka": [
            {"topic": "readings", "partition": 0, "after": 9, "through": 9},
            {"topic": "readings", "partition": 1, "after": 1, "through": 3},
            {"topic": "readings", "partition": 2, "after": -1, "through": 0},
        ],
        "files": [SHA_B],
        "registry": 5,
        "registry_changed": False,
        "project": 7,
        "now": None,
    }


def test_a_changed_project_or_registry_rebuilds_the_references_but_is_no_work_alone():
    progress = {kafka_stream("readings", 0): 9, REGISTRY_STREAM: 1, PROJECT_STREAM: 3}
    same = compute_window(
        committed={"readings": {0: 10}}, progress=progress, file_batches=[], registry=1, project=3
    )
    assert not same.references_changed and not same.has_work
    upgraded = compute_window(
        committed={"readings": {0: 10}}, progress=progress, file_batches=[], registry=1, project=4
    )
    assert upgraded.project_changed and upgraded.references_changed
    # A new project alone publishes nothing new: the next run with data rebuilds.
    assert not upgraded.has_work
    # A lake whose progress predates the project stream rebuilds them once.
    older = compute_window(
        committed={"readings": {0: 10}},
        progress={REGISTRY_STREAM: 1},
        file_batches=[],
        registry=1,
        project=3,
    )
    assert older.references_changed


def test_nothing_new_means_no_rows_to_process():
    progress = {kafka_stream("readings", 0): 9, file_stream(SHA_A): None, REGISTRY_STREAM: 1}
    window = compute_window(
        committed={"readings": {0: 10}}, progress=progress, file_batches=[SHA_A], registry=1
    )
    assert not window.has_new_rows and not window.registry_changed
    changed = compute_window(
        committed={"readings": {0: 10}}, progress=progress, file_batches=[SHA_A], registry=2
    )
    assert not changed.has_new_rows and changed.registry_changed


def test_full_refresh_ignores_progress():
    progress = {kafka_stream("readings", 0): 9, file_stream(SHA_A): None}
    window = compute_window(
        committed={"readings": {0: 10}},
        progress=progress,
        file_batches=[SHA_A],
        registry=1,
        full_refresh=True,
    )
    assert window.kafka == (PartitionRange("readings", 0, -1, 9),)
    assert window.files == (SHA_A,)


def test_bronze_behind_silver_asks_for_a_full_refresh():
    with pytest.raises(TransformError) as caught:
        compute_window(
            committed={"readings": {0: 5}},
            progress={kafka_stream("readings", 0): 9},
            file_batches=[],
            registry=1,
        )
    assert "--full-refresh" in (caught.value.fix or "")


@pytest.mark.parametrize(
    ("committed", "files"),
    [({"bad'topic": {0: 1}}, []), ({}, ["not-a-hash"]), ({}, ["A" * 64])],
)
def test_names_that_could_escape_sql_are_refused(committed, files):
    with pytest.raises(TransformError):
        compute_window(committed=committed, progress={}, file_batches=files, registry=1)


def test_held_back_readings_whose_time_has_come_are_work_for_a_run():
    progress: dict[str, int | None] = {"registry": 0}
    quiet = compute_window(committed={}, progress=progress, file_batches=[], registry=0)
    assert not quiet.has_work
    now = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    due = replace(quiet, now=now, held_back_due=True)
    assert due.has_work and due.as_dbt_var()["now"] == "2026-12-03T10:00:00+00:00"
