from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lakehouse.config import Settings, TablePolicy
from lakehouse.maintain.compact import policy_for
from lakehouse.maintain.retention import PartitionRisk


def test_a_tables_own_policy_wins_over_its_layers_which_wins_over_the_default(monkeypatch):
    monkeypatch.setenv(
        "LAKEHOUSE_MAINTAIN_POLICIES",
        '{"bronze": {"min_small_files": 3}, "bronze.readings": {"min_small_files": 50}}',
    )
    settings = Settings()
    assert policy_for(settings, "bronze", "readings").min_small_files == 50
    assert policy_for(settings, "bronze", "readings_rejected").min_small_files == 3
    assert policy_for(settings, "t1_bronze", "readings").min_small_files == 3
    assert policy_for(settings, "gold", "fct_device_hourly") == TablePolicy()


def test_policies_survive_the_trip_through_the_environment(monkeypatch):
    settings = Settings()
    settings.maintain.policies["gold"] = TablePolicy(small_file_bytes=1 << 20)
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    assert Settings().maintain.policies == settings.maintain.policies


def test_kafka_risks_say_what_expired_and_what_expires_when():
    now = datetime(2026, 12, 1, tzinfo=UTC)
    expired = PartitionRisk("readings", 2, committed=5, earliest=9, latest=20, expires_at=None)
    soon = PartitionRisk("readings", 0, committed=10, earliest=0, latest=15,
                         expires_at=now + timedelta(hours=3))  # fmt: skip
    assert expired.describe(now) == (
        "readings[2]: offsets 5 to 8 expired before bronze consumed them"
    )
    assert soon.describe(now) == (
        "readings[0]: 5 message(s) not yet in bronze; the oldest expires from Kafka in 3.0 h"
    )
