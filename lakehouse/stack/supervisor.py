"""The supervisor: one process that owns every server and service of the stack.

`lakehouse stack up` starts it detached (`run/supervisor.pid`, `logs/supervisor.log`).
It

- starts the servers in dependency order (adopting any still running from an earlier
  supervisor), waits for each to answer and bootstraps it; if one cannot start, it
  stops what it started and exits with the error recorded for `up` to report;
- then starts the services of ours (gateway, consumers, transform loop);
- watches every one in a thread of its own: a process that exits, or fails
  `health_failures` health checks in a row, is restarted after a backoff
  (`backoff_initial_seconds` doubling up to `backoff_max_seconds`, with jitter); after
  `max_restarts` consecutive failures it is marked failed with its last exit and log
  lines, and left alone. The count resets once a service stays healthy for
  `stable_seconds`. A service whose dependency is down waits for it without counting;
- rotates every log by size;
- on SIGTERM or SIGINT stops the services of ours, then the servers, in reverse order.

A file `run/hold/<name>` (`lakehouse stack stop NAME`) stops one service and keeps it
stopped until the file is removed (`lakehouse stack start NAME`, which also gives a
failed service a fresh set of restarts). Decisions are logged one line per change.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from wsgiref.simple_server import WSGIServer

from rich.console import Console

from lakehouse.config import Settings
from lakehouse.credentials import load
from lakehouse.errors import LakehouseError, ServiceStartError
from lakehouse.metrics import serve
from lakehouse.retry import Backoff
from lakehouse.stack import process
from lakehouse.stack.logrotate import rotate_if_large
from lakehouse.stack.servers import stack_services
from lakehouse.stack.service import Service, StackContext
from lakehouse.stack.state import (
    ServiceState,
    State,
    SupervisorState,
    hold_file,
    pid_file,
    state_file,
    supervisor_log,
)
from lakehouse.stack.supervisor_metrics import supervisor_registry
from lakehouse.stack.users import prepare_state_dir

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
LOG_ROTATE_SECONDS = 10.0
ERROR_LINES = 8


def describe_exit(code: int | None) -> str:
    if code is None or code == -1:
        return "exited (exit code unknown: started by an earlier supervisor)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class Watcher(threading.Thread):
    """Keeps one service running: start, watch, restart with backoff, or give up."""

    def __init__(self, supervisor: Supervisor, service: Service, state: ServiceState) -> None:
        super().__init__(name=f"watch-{service.name}", daemon=True)
        self.supervisor = supervisor
        self.service = service
        self.state = state
        self.policy = supervisor.settings.supervisor
        self.pid: int | None = None
        self._bad_checks = 0
        self._started_before = False

    # -- state ----------------------------------------------------------------------
    def _set(self, state: State, **changes: object) -> None:
        """One transition: the fields first and the state last, so whoever sees the new
        state (a reader thread, `stack status`) also sees everything that came with it."""
        previous = self.state.state
        for key, value in changes.items():
            setattr(self.state, key, value)
        self.state.state = state
        if state != previous:
            detail = f" ({self.state.last_exit})" if state in {"backoff", "failed"} else ""
            log.info("%s: %s -> %s%s", self.service.name, previous, state, detail)
        self.supervisor.publish()

    @property
    def _stopping(self) -> bool:
        return self.supervisor.stopping.is_set()

    def _held(self) -> bool:
        return hold_file(self.supervisor.settings, self.service.name).exists()

    # -- starting -------------------------------------------------------------------
    def adopt_or_start(self) -> None:
        """Initial start (servers, in order, on the main thread); raises ServiceStartError."""
        existing = self.service.pid()
        self._set("starting")
        if existing is not None:
            log.info("%s: adopting pid %d from an earlier start", self.service.name, existing)
            self.pid = existing
            self.service.wait_ready(existing)
        else:
            self._spawn()
            self.service.wait_ready(self.pid or 0)
        self.service.bootstrap()
        self._running()

    def _spawn(self) -> None:
        self.service.configure()
        # After configure, which may create files as the supervisor's user.
        prepare_state_dir(self.service.state_dir, self.service.run_as())
        self.pid = self.service.spawn()

    def _running(self, restarted: bool = False) -> None:
        self._bad_checks = 0
        self._started_before = True
        started = process.started_at(self.pid) if self.pid else None
        self._set(
            "running",
            pid=self.pid,
            healthy=True,
            started_at=started or time.time(),
            restarts=self.state.restarts + (1 if restarted else 0),
        )

    def _start(self, restarting: bool) -> None:
        """Start (or restart) and wait until ready; a failure goes to backoff."""
        self._set("starting", healthy=False)
        try:
            self._spawn()
            self._wait_ready()
        except LakehouseError as exc:
            self._fail(exc.message)
            return
        except Exception as exc:  # a start attempt failing for any reason is a failure
            self._fail(f"start failed: {exc}")
            return
        if self.state.restarts or self.state.failures:
            try:
                self.service.bootstrap()  # idempotent; re-asserts what a restart may lack
            except Exception as exc:  # the server runs; bootstrap is retried next start
                log.warning("%s: bootstrap after restart failed: %s", self.service.name, exc)
        self._running(restarted=restarting)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.service.start_timeout
        pid = self.pid or 0
        while time.monotonic() < deadline and not self._stopping:
            code = process.exited(pid)
            if code is not None:
                self.pid = None
                self.service.pid_file.unlink(missing_ok=True)
                raise ServiceStartError(
                    f"{describe_exit(code)} during start", service=self.service.name
                )
            if self.service.probe():
                return
            time.sleep(POLL_SECONDS)
        if self._stopping:
            return
        self._kill()
        raise ServiceStartError(
            f"not ready within {self.service.start_timeout:.0f} s", service=self.service.name
        )

    def _fail(self, reason: str) -> None:
        """Record one failure, then wait out the backoff, or give up after too many."""
        self.pid = None
        failures = self.state.failures + 1
        record = {
            "failures": failures,
            "last_error": process.tail(self.service.log_file, ERROR_LINES) or None,
            "pid": None,
            "healthy": False,
            "started_at": None,
        }
        if failures > self.policy.max_restarts:
            self._set("failed", last_exit=(
                f"{reason}; gave up after {failures} failures in a row"
            ), **record)  # fmt: skip
            return
        self._set("backoff", last_exit=reason, **record)
        delay = Backoff(self.policy.backoff_initial_seconds, self.policy.backoff_max_seconds).delay(
            failures
        )
        log.info("%s: restarting in %.1f s", self.service.name, delay)
        self.supervisor.stopping.wait(delay)

    def _kill(self) -> None:
        self.service.stop(timeout=5.0)
        self.pid = None

    # -- the loop -------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._loop()
        except Exception:  # the watcher must never die silently: record and retry
            log.exception("%s: watcher failed", self.service.name)
            self._set("failed", last_exit="the supervisor's watcher failed; see its log")

    def _loop(self) -> None:
        while not self._stopping:
            if self._held():
                self._hold()
            elif self.state.state == "failed":
                self.supervisor.stopping.wait(POLL_SECONDS)
            elif self.pid is None:
                self._bring_up()
            else:
                self._watch()

    def _hold(self) -> None:
        if self.pid is not None or self.service.pid() is not None:
            self._set("stopping")
            self.service.stop()
            self.pid = None
        self._set("held", pid=None, healthy=False, started_at=None, failures=0)
        self._started_before = False  # starting again after a hold is not a restart
        while self._held() and not self._stopping:
            self.supervisor.stopping.wait(POLL_SECONDS)
        if not self._stopping:
            self._set("stopped")

    def _bring_up(self) -> None:
        waiting_for = self.supervisor.unhealthy_dependency(self.service)
        if waiting_for is not None:
            if self.state.state != "waiting":
                self._set("waiting", last_exit=f"waiting for {waiting_for}")
            self.supervisor.stopping.wait(POLL_SECONDS * 2)
            return
        existing = None if self._started_before else self.service.pid()
        if existing is not None:
            # Still running from an earlier supervisor (which was killed): watch it.
            log.info("%s: adopting pid %d from an earlier start", self.service.name, existing)
            self.pid = existing
            self._running()
            return
        self._start(restarting=self._started_before)

    def _watch(self) -> None:
        """Watch the running process until it exits, fails its checks, or is held."""
        next_check = time.monotonic() + self.policy.health_interval_seconds
        while not self._stopping and not self._held():
            code = process.exited(self.pid or 0)
            if code is not None:
                self.service.pid_file.unlink(missing_ok=True)
                self._fail(describe_exit(code))
                return
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + self.policy.health_interval_seconds
                if not self._check_health():
                    return
            time.sleep(POLL_SECONDS)

    def _check_health(self) -> bool:
        """One health check; False when the process was killed for failing too many."""
        healthy = self.service.probe()
        if healthy:
            self._bad_checks = 0
            started = self.state.started_at or time.time()
            if self.state.failures and time.time() - started >= self.policy.stable_seconds:
                log.info("%s: stable again", self.service.name)
                self.state.failures = 0
        else:
            self._bad_checks += 1
        if healthy != self.state.healthy:
            log.info("%s: %s", self.service.name, "healthy" if healthy else "not answering")
            self.state.healthy = healthy
        self.supervisor.publish()
        if self._bad_checks < self.policy.health_failures:
            return True
        seconds = self._bad_checks * self.policy.health_interval_seconds
        self._kill()
        self._fail(f"no answer to health checks for {seconds:.1f} s; killed")
        return False


class Supervisor:
    """Starts, watches and stops every service of one stack home."""

    def __init__(self, settings: Settings, services: list[Service]) -> None:
        self.settings = settings
        self.services = services
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.state = SupervisorState(
            pid=os.getpid(),
            services=[
                ServiceState(s.name, s.kind, s.ports[0] if s.ports else 0, s.url) for s in services
            ],
        )
        self.watchers = [
            Watcher(self, service, state)
            for service, state in zip(services, self.state.services, strict=True)
        ]

    def publish(self) -> None:
        with self._lock:
            self.state.write(state_file(self.settings))

    def unhealthy_dependency(self, service: Service) -> str | None:
        for watcher in self.watchers:
            if watcher.service.name in service.depends_on and not (
                watcher.state.state == "running" and watcher.state.healthy
            ):
                return watcher.service.name
        return None

    def serve_metrics(self) -> WSGIServer | None:
        """Each service's state and restarts at http://host:metrics_port/metrics."""
        registry = supervisor_registry(lambda: list(self.state.services), self.settings.home)
        try:
            return serve(registry, self.settings.host, self.settings.supervisor.metrics_port)
        except OSError as exc:  # the stack runs without them rather than not at all
            log.warning(
                "supervisor metrics not served on port %d: %s",
                self.settings.supervisor.metrics_port, exc,
            )  # fmt: skip
            return None

    def run(self) -> int:
        """Start everything, watch until told to stop, stop everything; the exit code."""
        self.publish()
        metrics = self.serve_metrics()
        try:
            return self._run()
        finally:
            if metrics is not None:
                metrics.shutdown()
                metrics.server_close()

    def _run(self) -> int:
        try:
            for watcher in self.watchers:
                if watcher.service.kind == "server" and not watcher._held():
                    watcher.adopt_or_start()
                if self.stopping.is_set():
                    break
        except Exception as exc:  # a server that cannot start stops the stack, whatever failed
            message = exc.message if isinstance(exc, LakehouseError) else f"{exc!r}"
            if isinstance(exc, LakehouseError):
                log.error("%s", message)
            else:
                log.exception("starting the servers failed")
            self.state.phase = "fatal"
            self.state.error = message
            self.state.error_service = getattr(exc, "service", None) or next(
                (w.service.name for w in self.watchers if w.state.state == "starting"), None
            )
            self._stop_all()
            return 1
        self.state.phase = "running"
        self.publish()
        for watcher in self.watchers:
            watcher.start()
        rotator = threading.Thread(target=self._rotate_logs, name="logrotate", daemon=True)
        rotator.start()
        self.stopping.wait()
        for watcher in self.watchers:
            if watcher.is_alive():
                watcher.join(timeout=self.settings.stop_timeout)
        self._stop_all()
        return 0

    def _stop_all(self) -> None:
        fatal = self.state.phase == "fatal"
        self.state.phase = "stopping"
        self.publish()
        # Reversed below: the services of ours stop first, then the servers.
        ordered = [w for w in self.watchers if w.service.kind == "server"] + [
            w for w in self.watchers if w.service.kind == "service"
        ]
        for watcher in reversed(ordered):
            if watcher.service.pid() is not None:
                watcher._set("stopping")
                watcher.service.stop()
                log.info("%s stopped", watcher.service.name)
            watcher._set("stopped", pid=None, healthy=False, started_at=None)
        self.state.phase = "fatal" if fatal else "stopped"
        self.publish()

    def _rotate_logs(self) -> None:
        policy = self.settings.supervisor
        logs = [s.log_file for s in self.services] + [supervisor_log(self.settings)]
        while not self.stopping.wait(LOG_ROTATE_SECONDS):
            for path in logs:
                try:
                    rotate_if_large(path, policy.log_max_bytes, policy.log_backups)
                except OSError as exc:
                    log.warning("rotating %s failed: %s", path, exc)


def build_services(settings: Settings) -> list[Service]:
    """Every service of the stack in start order: the servers, then ours."""
    return stack_services(StackContext(settings, load(settings), Console(stderr=True, quiet=True)))


def main() -> None:
    """Entry point of the supervisor process (started by `lakehouse stack up`)."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    # A service's own library logging (httpx, kafka) would repeat every probe.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = Settings()
    supervisor = Supervisor(settings, build_services(settings))
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: supervisor.stopping.set())
    log.info("supervisor %d starting %d services", os.getpid(), len(supervisor.services))
    code = supervisor.run()
    pid_file(settings).unlink(missing_ok=True)
    log.info("supervisor stopped")
    sys.exit(code)


if __name__ == "__main__":
    main()
