"""Long fetch and build steps: their progress display, and who gets the CPU."""

from __future__ import annotations

import io
import re
import threading
import time

from rich.console import Console

from lakehouse.stack import fetch
from lakehouse.stack.fetch import run_step


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


def test_a_step_beside_a_build_yields_the_cpu(tmp_path):
    log_file = tmp_path / "download.log"
    run_step(
        ["/bin/sh", "-c", "sleep 0.5; nice"],  # `nice` alone prints its own niceness
        description="downloading",
        log_file=log_file,
        console=Console(file=io.StringIO()),
        niceness=fetch.BESIDE_A_BUILD,
    )
    assert log_file.read_text() == f"{fetch.BESIDE_A_BUILD}\n"
