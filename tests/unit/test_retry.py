from __future__ import annotations

import itertools

from lakehouse.retry import Backoff


def test_delays_double_from_the_initial_delay_up_to_the_cap():
    backoff = Backoff(initial=0.5, cap=30.0, jitter=0.0)
    expected = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert [backoff.delay(n) for n in range(1, 9)] == expected
    assert list(itertools.islice(backoff.delays(), 8)) == expected


def test_jitter_stays_within_its_share():
    backoff = Backoff(initial=10.0, cap=10.0, jitter=0.2)
    assert all(8.0 <= backoff.delay(1) <= 12.0 for _ in range(200))


def test_a_long_outage_stays_at_the_cap():
    assert Backoff(initial=5.0, cap=60.0, jitter=0.0).delay(100_000) == 60.0
