from __future__ import annotations

import io
import re
import threading
import time

import pytest
from rich.console import Console

from lakehouse.config import Settings
from lakehouse.credentials import load_or_create
from lakehouse.errors import FetchError
from lakehouse.stack import fetch
from lakehouse.stack.fetch import run_step
from lakehouse.stack.manager import SERVER_NAMES, Stack


def test_status_of_a_stack_never_started(tmp_path):
    stack = Stack(Settings(home=tmp_path / "home"), Console(quiet=True))
    statuses = stack.status()
    assert [s.name for s in statuses] == [*SERVER_NAMES, "audit", "gateway", "consumer-1"]
    assert all(s.pid is None and not s.healthy for s in statuses)
    assert not (tmp_path / "home" / "credentials.json").exists()


def test_down_purge_deletes_all_state(tmp_path):
    settings = Settings(home=tmp_path / "home")
    load_or_create(settings)
    (settings.home / "minio" / "data").mkdir(parents=True)
    stack = Stack(settings, Console(quiet=True))
    assert stack.down(purge=True) == []
    assert not settings.home.exists()


class _Step:
    """A service's obtain(): waits at a barrier every step must reach together."""

    def __init__(self, barrier: threading.Barrier, failure: Exception | None = None) -> None:
        self.barrier = barrier
        self.failure = failure
        self.finished = False

    def obtain(self) -> None:
        self.barrier.wait(timeout=10)  # broken unless every step runs at once
        if self.failure is not None:
            raise self.failure
        time.sleep(0.2)
        self.finished = True


def test_servers_are_obtained_at_once_and_a_failure_waits_for_the_others(tmp_path):
    stack = Stack(Settings(home=tmp_path / "home"), Console(quiet=True))
    barrier = threading.Barrier(3)
    build, failing, download = (
        _Step(barrier),
        _Step(barrier, FetchError("downloading Kafka 4.1.1 failed (exit 1)")),
        _Step(barrier),
    )
    with pytest.raises(FetchError, match=r"downloading Kafka 4\.1\.1 failed"):
        stack._obtain([build, failing, download])  # type: ignore[list-item]
    assert build.finished and download.finished


def test_concurrent_steps_share_one_terminal_display(tmp_path):
    console = Console(file=io.StringIO(), force_terminal=True)
    # Each build says it started, then runs until the test has looked at the display.
    build = (
        'touch "$0.started"; for _ in $(seq 200); do [ -e "$1" ] && break; sleep 0.05; done; '
        "echo built"
    )
    release = tmp_path / "release"

    def step(name: str) -> None:
        run_step(
            ["/bin/sh", "-c", build, str(tmp_path / name), str(release)],
            description=f"building {name}",
            log_file=tmp_path / f"{name}.log",
            console=console,
        )

    with fetch.one_display(console):
        threads = [threading.Thread(target=step, args=(name,)) for name in "ab"]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while not all((tmp_path / f"{n}.started").exists() for n in "ab"):
            assert time.monotonic() < deadline, "the builds did not start"
            time.sleep(0.02)
        display = fetch._shared_display
        assert display is not None
        assert sorted(task.description for task in display.tasks) == ["building a", "building b"]
        release.touch()
        for thread in threads:
            thread.join()
        assert display.tasks == []  # a finished step leaves the display
    assert (tmp_path / "a.log").read_text() == (tmp_path / "b.log").read_text() == "built\n"
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", console.file.getvalue())  # type: ignore[attr-defined]
    assert "building a: done in 0 s" in shown
    assert "building b: done in 0 s" in shown
