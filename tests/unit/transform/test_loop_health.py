from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lakehouse.transform_runs import RunRecord, loop_health

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def record(minute: int, outcome: str, error: str | None = None) -> RunRecord:
    at = T0 + timedelta(minutes=minute)
    return RunRecord(
        f"r{minute}", at, at, outcome, False, None, None, None, None, None, 1.0, None, error
    )


def test_no_runs_say_nothing():
    assert loop_health([]) is None


def test_only_successes_show_the_last_run():
    runs = [record(2, "up_to_date"), record(1, "published")]
    assert loop_health(runs) == "transform: last run up_to_date at 2026-12-07 12:02:00 UTC"


def test_a_failure_followed_by_a_success_is_shown_as_recovered():
    runs = [
        record(3, "published"),
        record(2, "interrupted", "nessie went away during the build\nmore"),
        record(1, "published"),
    ]
    assert loop_health(runs) == (
        "transform: last run published at 2026-12-07 12:03:00 UTC; last failure interrupted "
        "at 2026-12-07 12:02:00 UTC (nessie went away during the build), recovered since"
    )


def test_failures_in_a_row_are_shown_from_the_first():
    runs = [
        record(5, "failed", "2 node(s) failed"),
        record(4, "error", "x"),
        record(3, "published"),
    ]
    assert loop_health(runs) == (
        "transform: last run failed at 2026-12-07 12:05:00 UTC; failing since "
        "2026-12-07 12:04:00 UTC (2 node(s) failed)"
    )
