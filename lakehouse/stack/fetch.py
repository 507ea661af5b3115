"""Obtain pinned server artifacts with the registries' own clients, with progress.

Maven Central artifacts come through `mvn` (strict checksums against the `.sha1`
files Central publishes) into a local repository under the cache directory, and the
primary artifacts are then checked against the SHA-256 pinned in `artifacts.py`. Go
modules come through `go install`, which verifies them against the Go checksum
database.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from lakehouse.digest import file_sha256
from lakehouse.errors import ChecksumMismatchError, FetchError, PrerequisiteError
from lakehouse.stack.artifacts import MavenArtifact
from lakehouse.stack.process import tail

log = logging.getLogger(__name__)
# Downloads and installs run beside MinIO's build, which takes longest: they yield the CPU.
BESIDE_A_BUILD = 10


def require_tool(name: str, fix: str) -> str:
    """Absolute path of an executable on PATH, or a PrerequisiteError naming the fix."""
    path = shutil.which(name)
    if path is None:
        raise PrerequisiteError(f"`{name}` was not found on PATH", fix=fix)
    return path


def verify_sha256(path: Path, expected: str) -> None:
    """Raise ChecksumMismatchError unless `path` hashes to `expected`."""
    actual = file_sha256(path)
    if actual != expected:
        raise ChecksumMismatchError(
            f"checksum mismatch for {path.name}: expected sha256 {expected}, got {actual}",
            fix=f"delete {path} so it is downloaded again; if it persists, the mirror is bad",
        )


def dir_size(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def count_lines(path: Path, marker: str) -> int:
    """How many lines of a (growing) log contain `marker`."""
    try:
        with path.open("r", errors="replace") as handle:
            return sum(1 for line in handle if marker in line)
    except OSError:
        return 0


class _AmountColumn(ProgressColumn):
    """Bytes and speed for a download, a count of its unit for a build, nothing for a
    step of unknown size: concurrent steps of every kind share one display."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = DownloadColumn()
        self._speed = TransferSpeedColumn()
        self._count = MofNCompleteColumn()

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        unit = task.fields.get("unit", "bytes")
        if unit == "bytes":
            return Text.assemble(self._bytes.render(task), " ", self._speed.render(task))
        return Text.assemble(self._count.render(task), f" {unit}")


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        _AmountColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


_shared_display: Progress | None = None


@contextmanager
def one_display(console: Console) -> Iterator[None]:
    """Steps run concurrently inside this block show their progress in one display (a
    terminal holds one live display at a time)."""
    global _shared_display
    with _progress(console) as display:
        _shared_display = display
        try:
            yield
        finally:
            _shared_display = None


@contextmanager
def progress_bar(
    console: Console, description: str, total: int | None, unit: str = "bytes"
) -> Iterator[Callable[[float], None]]:
    """A bar for one step, in the shared display when there is one; yields its update."""
    display = _shared_display
    if display is None:
        with _progress(console) as own:
            task = own.add_task(description, total=total, unit=unit)
            yield lambda done: own.update(task, completed=done)
        return
    task = display.add_task(description, total=total, unit=unit)
    try:
        yield lambda done: display.update(task, completed=done)
    finally:
        display.remove_task(task)


def run_step(
    command: list[str],
    *,
    description: str,
    log_file: Path,
    console: Console,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    measure: Callable[[], int] | None = None,
    total: int | None = None,
    unit: str = "bytes",
    niceness: int = 0,
) -> None:
    """Run a long fetch/build command, showing a progress bar driven by `measure()`.

    With `total` the bar shows bytes (`unit="bytes"`) or a count of `unit`; without it,
    a spinner and the elapsed time. A positive `niceness` leaves the CPU to the steps
    that take longest when they run at once.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log.info("%s: %s", description, " ".join(command))
    if not console.is_terminal:
        console.print(f"{description} …")
    with (
        log_file.open("ab") as out,
        progress_bar(console, description, total, unit) as update,
    ):
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        if niceness:
            with suppress(OSError):  # it may have finished already
                os.setpriority(os.PRIO_PROCESS, proc.pid, niceness)
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(0.5):
                if measure is not None:
                    update(measure())

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        code = proc.wait()
        stop.set()
        watcher.join()
    if code != 0:
        raise FetchError(
            f"{description} failed (exit {code}); last lines of {log_file}:\n{tail(log_file, 15)}",
            fix="check network access to the package registry, then run the command again",
        )
    console.print(f"{description}: done in {time.monotonic() - started:.0f} s")


class MavenFetcher:
    """Resolves Maven Central artifacts into a local repository under the cache.

    One `mvn` runs at a time: servers are obtained concurrently, and two runs would
    write the same plugin files into the shared local repository.
    """

    _one_at_a_time = threading.Lock()

    def __init__(self, cache_dir: Path, console: Console) -> None:
        self.repository = cache_dir / "m2"
        self.logs = cache_dir / "logs"
        self.console = console

    def _mvn(self) -> list[str]:
        mvn = require_tool(
            "mvn", fix="install Maven: `apt-get install -y maven` (or your OS's package)"
        )
        return [mvn, "-B", "--strict-checksums", f"-Dmaven.repo.local={self.repository}"]

    def artifact(self, artifact: MavenArtifact) -> Path:
        """Download one artifact (no dependencies), verify it and return its path."""
        path = artifact.local_path(self.repository)
        with self._one_at_a_time:
            if not path.exists():
                run_step(
                    [
                        *self._mvn(),
                        "dependency:get",
                        f"-Dartifact={artifact.coordinate}",
                        "-Dtransitive=false",
                    ],
                    description=f"downloading {artifact.file_name}",
                    log_file=self.logs / f"{artifact.artifact_id}-{artifact.version}.log",
                    console=self.console,
                    measure=lambda: dir_size(path.parent),
                    total=artifact.size,
                    niceness=BESIDE_A_BUILD,
                )
        if not path.exists():
            raise FetchError(f"Maven reported success but {path} is missing")
        verify_sha256(path, artifact.sha256)
        return path

    def dependencies(self, pom: Path, output: Path, description: str) -> None:
        """Copy the runtime dependencies of `pom` into `output`."""
        with self._one_at_a_time:
            run_step(
                [
                    *self._mvn(),
                    "-f",
                    str(pom),
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={output}",
                    "-DincludeScope=runtime",
                ],
                description=description,
                log_file=self.logs / f"{pom.parent.name}-dependencies.log",
                console=self.console,
                measure=lambda: len(list(output.glob("*.jar"))) if output.exists() else 0,
                niceness=BESIDE_A_BUILD,
            )
