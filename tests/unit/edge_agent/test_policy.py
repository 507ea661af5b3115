from __future__ import annotations

import random
import stat

import pytest
from lakehouse_edge import clock
from lakehouse_edge.clock import ClockGuard
from lakehouse_edge.config import AgentConfig, ConfigError
from lakehouse_edge.retry import RetryPolicy


def test_backoff_doubles_to_the_cap_honours_retry_after_and_resets():
    policy = RetryPolicy(jitter=0.0)
    assert [policy.next_delay() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert policy.next_delay(retry_after=90) == 90
    policy.succeeded()
    assert policy.next_delay() == 1
    jittery = RetryPolicy(jitter=0.2, _rng=random.Random(1))
    assert 0.8 <= jittery.next_delay() <= 1.2


def test_clock_guard_refuses_1970_and_going_backwards(tmp_path, monkeypatch):
    guard = ClockGuard(str(tmp_path / "clock"), synchronised=lambda: False)
    monkeypatch.setattr(clock.time, "time", lambda: 86_400.0)  # 1970-01-02
    assert guard.stamp() is None
    monkeypatch.setattr(clock.time, "time", lambda: 1_795_000_000.0)
    assert guard.stamp() == "2026-11-18T11:06:40.000Z"
    monkeypatch.setattr(clock.time, "time", lambda: 1_794_000_000.0)  # jumped back
    assert guard.stamp() is None
    assert ClockGuard(str(tmp_path / "clock")).newest == 1_795_000_000.0  # persisted


def test_a_synchronised_clock_that_went_back_is_trusted(tmp_path, monkeypatch):
    """A jump forward, then NTP puts the clock right: sampling goes on at once."""
    synced = [False]
    guard = ClockGuard(str(tmp_path / "clock"), synchronised=lambda: synced[0])
    monkeypatch.setattr(clock.time, "time", lambda: 1_795_000_000.0)  # an hour fast
    assert guard.stamp() is not None
    monkeypatch.setattr(clock.time, "time", lambda: 1_794_996_400.0)
    assert guard.stamp() is None  # not synchronised yet: cannot tell which is right
    synced[0] = True
    assert guard.stamp() == "2026-11-18T10:06:40.000Z"
    assert ClockGuard(str(tmp_path / "clock")).newest == 1_794_996_400.0
    synced[0] = False
    monkeypatch.setattr(clock.time, "time", lambda: 1_794_996_401.5)
    assert guard.stamp() is not None


def test_token_file_must_be_private(tmp_path):
    token = tmp_path / "token"
    token.write_text("lhd_secret\n")
    token.chmod(0o644)
    config = AgentConfig(gateway="http://x", token_file=str(token), state_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="chmod 600"):
        config.token()
    token.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert config.token() == "lhd_secret"


def test_config_errors_are_clear(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('gateway = "http://x"\ntoken_file = "t"\nstate_dir = "s"\nbogus = 1\n')
    with pytest.raises(ConfigError, match="bogus"):
        AgentConfig.load(str(path))
