"""`lakehouse audit show --since`: durations and instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lakehouse.audit import EventFilter, latest, since_instant
from lakehouse.errors import ConfigError

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "ago"),
    [("15m", timedelta(minutes=15)), ("2h", timedelta(hours=2)), ("7d", timedelta(days=7)),
     ("30s", timedelta(seconds=30))],
)  # fmt: skip
def test_a_duration_counts_back_from_now(value, ago):
    assert since_instant(value, now=NOW) == NOW - ago


def test_an_instant_without_offset_is_utc():
    assert since_instant("2026-12-02T10:00:00") == datetime(2026, 12, 2, 10, tzinfo=UTC)
    assert since_instant("2026-12-02T10:00:00+01:00") == datetime(2026, 12, 2, 9, tzinfo=UTC)


def test_anything_else_is_refused_with_the_forms_it_takes():
    with pytest.raises(ConfigError) as info:
        since_instant("yesterday")
    assert "15m" in str(info.value.fix)


class _Recorder:
    def __init__(self):
        self.calls = []

    def execute(self, sql, params):
        self.calls.append((sql, params))
        return self

    def fetchall(self):
        return []


def test_every_filter_reaches_the_query_as_a_parameter():
    conn = _Recorder()
    only = EventFilter(source="trino", principal="superset", outcome="refused", since=NOW)
    latest(conn, only, 5)
    sql, params = conn.calls[0]
    assert params == {"source": "trino", "principal": "superset", "outcome": "refused",
                      "since": NOW, "limit": 5}  # fmt: skip
    for name in ("source", "principal", "outcome", "since"):
        assert f"%({name})s" in sql
    assert "detail->>'statement'" in sql
