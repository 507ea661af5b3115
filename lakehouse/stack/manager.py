"""Bring the whole stack up under its supervisor, report its status, and stop it.

`up` obtains every server here (downloads and builds show their progress in the
terminal), then starts the supervisor process, which configures, starts, watches and
restarts everything (lakehouse.stack.supervisor), and follows it until the stack is up.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from lakehouse.config import Settings
from lakehouse.credentials import credentials_path, load, load_or_create
from lakehouse.errors import ConfigError, ServiceStartError, StackError
from lakehouse.stack import fetch, process
from lakehouse.stack.apps import app_ports
from lakehouse.stack.servers import SERVER_NAMES, stack_services
from lakehouse.stack.service import Service, ServiceStatus, StackContext
from lakehouse.stack.state import (
    ServiceState,
    SupervisorState,
    hold_file,
    pid_file,
    state_file,
    supervisor_log,
)
from lakehouse.stack.users import secure_home

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 25
# How long `up` waits for the services of ours once the servers are up.
APP_START_SECONDS = 90.0


class Stack:
    """The native stack under one home directory."""

    def __init__(self, settings: Settings, console: Console | None = None) -> None:
        self.settings = settings
        self.console = console or Console(stderr=True)
        self._services: list[Service] | None = None
        # Seconds from launching the supervisor until each service ran, in the last `up`.
        self.start_seconds: dict[str, float] = {}

    def _context(self, *, create_credentials: bool) -> StackContext:
        credentials = load_or_create(self.settings) if create_credentials else load(self.settings)
        return StackContext(self.settings, credentials, self.console)

    def services(self, *, create_credentials: bool = False) -> list[Service]:
        """Every service in start order: the servers, then the enabled services of ours."""
        if self._services is None:
            ctx = self._context(create_credentials=create_credentials)
            self._services = stack_services(ctx)
        return self._services

    def names(self) -> list[str]:
        return [*SERVER_NAMES, *app_ports(self.settings)]

    def service(self, name: str) -> Service:
        for service in self.services():
            if service.name == name:
                return service
        raise ConfigError(f"unknown service {name!r}", fix=f"use one of: {', '.join(self.names())}")

    @property
    def initialised(self) -> bool:
        return credentials_path(self.settings).exists()

    @contextmanager
    def _lock(self) -> Iterator[None]:
        lock_file = self.settings.home / "run" / "stack.lock"
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        with lock_file.open("w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise StackError(
                    "another `lakehouse stack` command is changing this stack right now",
                    fix="wait for it to finish",
                ) from exc
            yield

    # -- the supervisor -----------------------------------------------------------------
    def supervisor_pid(self) -> int | None:
        return process.running_pid(pid_file(self.settings))

    def supervisor_state(self) -> SupervisorState | None:
        return SupervisorState.read(state_file(self.settings))

    def up(self) -> list[ServiceStatus]:
        """Obtain every server, start the supervisor if none runs, wait until all is up."""
        self.settings.home.mkdir(parents=True, exist_ok=True)
        with self._lock():
            services = self.services(create_credentials=True)
            supervisor = self.supervisor_pid()
            if supervisor is None:
                # Fail on a taken port before spending minutes on downloads and builds.
                for service in services:
                    if service.pid() is None:
                        service.check_ports()
                secure_home(self.settings)
                self._obtain(services)
                started = time.monotonic()
                supervisor = self._launch_supervisor()
            else:
                self.console.print(f"supervisor already running (pid {supervisor})")
                started = time.monotonic()
            self._follow_start(supervisor, started)
        return self.status()

    def _obtain(self, services: list[Service]) -> None:
        """Fetch and build every missing server at once: on a fresh machine MinIO's build
        keeps the CPU busy while the downloads wait on the network. The first failure is
        raised once every other step has finished (what they fetched stays cached)."""
        with fetch.one_display(self.console), ThreadPoolExecutor(len(services)) as pool:
            steps = [pool.submit(service.obtain) for service in services]
        for step in steps:
            failure = step.exception()
            if failure is not None:
                raise failure

    def _launch_supervisor(self) -> int:
        home = self.settings.home
        state_file(self.settings).unlink(missing_ok=True)
        return process.spawn(
            [sys.executable, "-m", "lakehouse.stack.supervisor"],
            pid_file=pid_file(self.settings),
            log_file=supervisor_log(self.settings),
            cwd=home,
            env={**process.base_env(home), **self.settings.to_env()},
        )

    def _follow_start(self, supervisor: int, started: float) -> None:
        """Print each service as it comes up; raise when the supervisor gives up."""
        reported: set[str] = set()
        app_deadline: float | None = None
        while True:
            state = self.supervisor_state()
            code = process.exited(supervisor)
            if state is not None and state.phase == "fatal":
                raise self._fatal(state)
            if code is not None:
                raise StackError(
                    f"the supervisor exited during start ({code})",
                    fix=f"see {supervisor_log(self.settings)}:\n"
                    + process.tail(supervisor_log(self.settings), LOG_TAIL_LINES),
                )
            if state is not None:
                self._report_progress(state, reported, started)
                if state.phase == "running":
                    app_deadline = app_deadline or time.monotonic() + APP_START_SECONDS
                    if _settled(state) or time.monotonic() > app_deadline:
                        self._report_unsettled(state)
                        return
            time.sleep(0.3)

    def _report_progress(self, state: SupervisorState, reported: set[str], started: float) -> None:
        for service in state.services:
            if service.name in reported or service.state != "running" or not service.healthy:
                continue
            reported.add(service.name)
            elapsed = time.monotonic() - started
            self.start_seconds[service.name] = elapsed
            self.console.print(
                f"[green]✓[/] {service.name:<10} running (pid {service.pid}) at {elapsed:.1f} s"
            )

    def _report_unsettled(self, state: SupervisorState) -> None:
        for service in state.services:
            if service.state == "running" and service.healthy:
                continue
            self.console.print(
                f"[yellow]![/] {service.name:<10} {service.state}"
                + (f": {service.last_exit}" if service.last_exit else ""),
                highlight=False,
            )

    def _fatal(self, state: SupervisorState) -> ServiceStartError:
        name = state.error_service or "supervisor"
        log_file = self.settings.home / "logs" / f"{name}.log"
        return ServiceStartError(
            f"{name} could not start: {state.error}",
            fix=f"see the full log with `lakehouse stack logs {name}` ({log_file})",
            service=name,
            log_tail=process.tail(log_file, LOG_TAIL_LINES),
        )

    # -- holding one service --------------------------------------------------------------
    def hold(self, name: str, timeout: float = 120.0) -> None:
        """Stop one service and keep it stopped (`stack stop NAME`)."""
        self._require_supervisor(name)
        path = hold_file(self.settings, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        self._wait_for(name, lambda s: s.state == "held", timeout, "stop")

    def release(self, name: str, timeout: float = 300.0) -> None:
        """Let the supervisor start a held or failed service again (`stack start NAME`)."""
        self._require_supervisor(name)
        hold_file(self.settings, name).unlink(missing_ok=True)
        state = self.supervisor_state()
        current = state.service(name) if state else None
        if current is not None and current.state == "failed":
            # A fresh set of restarts: hold, then release.
            self.hold(name)
            hold_file(self.settings, name).unlink(missing_ok=True)
        self._wait_for(name, lambda s: s.state == "running" and s.healthy, timeout, "start")

    def _require_supervisor(self, name: str) -> None:
        self.service(name)
        if self.supervisor_pid() is None:
            raise StackError("the stack is not running", fix="start it: lakehouse stack up")

    def _wait_for(
        self, name: str, done: Callable[[ServiceState], bool], timeout: float, verb: str
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.supervisor_state()
            current = state.service(name) if state else None
            if current is not None and done(current):
                return
            time.sleep(0.3)
        raise StackError(
            f"{name} did not {verb} within {timeout:.0f} s",
            fix=f"see `lakehouse stack status` and `lakehouse stack logs {name}`",
        )

    # -- down and status ------------------------------------------------------------------
    def down(self, *, purge: bool = False) -> list[str]:
        """Stop the supervisor and everything it runs (reverse order); `purge` deletes state."""
        stopped: list[str] = []
        if self.initialised:
            with self._lock():
                running = [s.name for s in self.status() if s.pid is not None]
                supervisor = self.supervisor_pid()
                if supervisor is not None:
                    self._stop_supervisor(supervisor)
                # Anything left from a start without a supervisor (or a killed one).
                for service in reversed(self.services()):
                    service.stop()
                stopped = [name for name in running if self.service(name).pid() is None]
                for name in reversed(stopped):
                    self.console.print(f"[yellow]■[/] {name} stopped")
        if purge:
            _remove_tree(self.settings.home)
            self.console.print(f"deleted {self.settings.home}")
        return stopped

    def _stop_supervisor(self, pid: int) -> None:
        process.signal_process(pid, signal.SIGTERM)
        # Each service gets stop_timeout to stop gracefully, one after another.
        timeout = self.settings.stop_timeout * (len(self.services()) + 1) + 30
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.exited(pid) is not None:
                pid_file(self.settings).unlink(missing_ok=True)
                return
            time.sleep(0.3)
        log.warning("the supervisor did not stop within %.0f s; killing it", timeout)
        process.terminate(pid_file(self.settings), 1.0)

    def status(self) -> list[ServiceStatus]:
        """Every service's state as the supervisor reports it (probed when none runs)."""
        if not self.initialised:
            ports = {**_server_ports(self.settings), **app_ports(self.settings)}
            return [
                ServiceStatus(name, None, ports.get(name, 0), "", False) for name in self.names()
            ]
        state = self.supervisor_state() if self.supervisor_pid() is not None else None
        if state is None:
            return [service.status() for service in self.services()]
        now = time.time()
        return [_from_state(row, now) for row in state.services]


def _settled(state: SupervisorState) -> bool:
    """Every service either runs healthy or has been given up on (or is held)."""
    return all(
        (s.state == "running" and s.healthy) or s.state in {"failed", "held"}
        for s in state.services
    )


def _from_state(row: ServiceState, now: float) -> ServiceStatus:
    return ServiceStatus(
        row.name, row.pid, row.port, row.url, row.state == "running" and row.healthy,
        kind=row.kind, state=row.state, uptime_seconds=row.uptime(now),
        restarts=row.restarts, last_exit=row.last_exit, last_error=row.last_error,
    )  # fmt: skip


def _server_ports(settings: Settings) -> dict[str, int]:
    return {
        "postgres": settings.postgres.port,
        "minio": settings.minio.port,
        "nessie": settings.nessie.port,
        "kafka": settings.kafka.port,
        "trino": settings.trino.port,
    }


def _remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
