from __future__ import annotations

from lakehouse.transform_runs import lock_within


class LockConn:
    """PostgreSQL's pg_try_advisory_lock, held by a transform run for `busy` attempts."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.attempts = 0

    def execute(self, sql: str, params: tuple[int, ...]) -> LockConn:
        assert sql == "select pg_try_advisory_lock(%s)"
        self.attempts += 1
        return self

    def fetchone(self) -> tuple[bool]:
        return (self.attempts > self.busy,)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_lock_is_taken_in_the_first_gap_between_runs():
    conn, clock = LockConn(busy=30), Clock()
    assert lock_within(conn, 120, sleep=clock.sleep, clock=clock)  # type: ignore[arg-type]
    assert (conn.attempts, clock.now) == (31, 15.0)


def test_a_lock_held_all_along_is_given_up_on_time():
    conn, clock = LockConn(busy=10_000), Clock()
    assert not lock_within(conn, 120, sleep=clock.sleep, clock=clock)  # type: ignore[arg-type]
    assert (conn.attempts, clock.now) == (241, 120.0)
