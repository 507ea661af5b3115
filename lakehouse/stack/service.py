"""The one shape every stack service shares: obtain, configure, start, ready, stop."""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from rich.console import Console

from lakehouse.config import Settings
from lakehouse.credentials import Credentials
from lakehouse.errors import PortInUseError, ServiceStartError
from lakehouse.stack import process
from lakehouse.stack.fetch import MavenFetcher
from lakehouse.stack.java import find_java
from lakehouse.stack.users import ensure_os_user, service_user

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 25


@dataclass
class StackContext:
    """What every service needs: settings, secrets, a console and shared helpers."""

    settings: Settings
    credentials: Credentials
    console: Console
    _java: Path | None = field(default=None, repr=False)

    @property
    def maven(self) -> MavenFetcher:
        return MavenFetcher(self.settings.cache_dir, self.console)

    def java(self) -> Path:
        if self._java is None:
            self._java = find_java(self.settings.java_home, self.console)
        return self._java


@dataclass(frozen=True)
class ServiceStatus:
    """One row of `lakehouse stack status`."""

    name: str
    pid: int | None
    port: int
    url: str
    healthy: bool
    kind: str = "server"
    # The supervisor's view (see lakehouse.stack.state): "stopped" when none runs.
    state: str = "stopped"
    uptime_seconds: float | None = None
    restarts: int = 0
    last_exit: str | None = None
    last_error: str | None = None


class Service(ABC):
    """A server run as a plain local process with its state under `home/<name>`."""

    name: ClassVar[str]
    # "server": a third-party server; "service": one of ours (stopped first).
    kind: ClassVar[Literal["server", "service"]] = "server"
    # Services that must be healthy before this one is (re)started.
    depends_on: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ctx: StackContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings

    # -- layout ---------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return self.settings.home / self.name

    @property
    def log_file(self) -> Path:
        return self.settings.home / "logs" / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.settings.home / "run" / f"{self.name}.pid"

    @property
    def start_timeout(self) -> float:
        return 60.0

    # -- what each service defines ----------------------------------------------------
    @property
    @abstractmethod
    def ports(self) -> list[int]:
        """Ports this service binds; the first is the one shown in status."""

    @property
    @abstractmethod
    def url(self) -> str:
        """Where a user reaches the service."""

    @abstractmethod
    def obtain(self) -> None:
        """Make the server's binaries available in the cache (download or build)."""

    @abstractmethod
    def configure(self) -> None:
        """Write configuration and initialise on-disk state; must be idempotent."""

    @abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the server in the foreground."""

    @abstractmethod
    def ready(self) -> bool:
        """True once the service answers its health check."""

    def env(self) -> dict[str, str]:
        return {}

    def run_as(self) -> str | None:
        """OS user to run as (None: the current user); unprivileged when started as root."""
        return service_user(self.settings)

    def alive(self) -> bool:
        """The supervisor's periodic health check; by default the readiness check."""
        return self.ready()

    def bootstrap(self) -> None:  # noqa: B027 - optional hook, most services need nothing
        """Create what the platform expects inside the running service; idempotent."""

    # -- shared behaviour ---------------------------------------------------------------
    def pid(self) -> int | None:
        return process.running_pid(self.pid_file)

    def status(self) -> ServiceStatus:
        pid = self.pid()
        healthy = pid is not None and self._safe_ready()
        return ServiceStatus(
            self.name, pid, self.ports[0] if self.ports else 0, self.url, healthy,
            kind=self.kind, state="unsupervised" if pid else "stopped",
            uptime_seconds=process.uptime(pid) if pid else None,
        )  # fmt: skip

    def _safe_ready(self) -> bool:
        return self._answers(self.ready, "readiness")

    def probe(self) -> bool:
        """The health check as a boolean: any failure to answer counts as unhealthy."""
        return self._answers(self.alive, "health")

    def _answers(self, check: Callable[[], bool], what: str) -> bool:
        try:
            return check()
        except Exception:  # a probe failing for any reason means "no"
            log.debug("%s %s probe failed", self.name, what, exc_info=True)
            return False

    @property
    def bind_host(self) -> str:
        """The address this service listens on."""
        return self.settings.host

    def check_ports(self) -> None:
        for port in self.ports:
            if not process.port_is_free(self.bind_host, port):
                owner = process.port_owner(port) or "another process"
                raise PortInUseError(
                    f"{self.name} cannot start: port {self.bind_host}:{port} "
                    f"is already in use by {owner}",
                    fix=f"stop that process, or move {self.name} with LAKEHOUSE_"
                    f"{self.name.upper()}_PORT (see `lakehouse stack status`)",
                )

    def spawn(self) -> int:
        """Start the process (not waiting for it) with only the environment it needs."""
        user = self.run_as()
        if user is not None:
            ensure_os_user(user)  # on a fresh machine, nothing may have created it yet
        return process.spawn(
            self.command(),
            pid_file=self.pid_file,
            log_file=self.log_file,
            cwd=self.state_dir,
            env={**process.base_env(self.state_dir), **self.env()},
            user=user,
        )

    def start(self) -> int:
        """Start the process and wait until it is ready; raises ServiceStartError."""
        self.check_ports()
        pid = self.spawn()
        self.wait_ready(pid)
        return pid

    def wait_ready(self, pid: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            code = process.exited(pid)
            if code is not None:
                self.pid_file.unlink(missing_ok=True)
                raise self._start_error(f"{self.name} exited during start (exit code {code})")
            if self._safe_ready():
                return
            time.sleep(0.5)
        process.terminate(self.pid_file, self.settings.stop_timeout)
        raise self._start_error(
            f"{self.name} did not become ready within {self.start_timeout:.0f} s"
        )

    def _start_error(self, message: str) -> ServiceStartError:
        return ServiceStartError(
            message,
            fix=f"see the full log with `lakehouse stack logs {self.name}` ({self.log_file})",
            service=self.name,
            log_tail=process.tail(self.log_file, LOG_TAIL_LINES),
        )

    def stop(self, timeout: float | None = None) -> bool:
        """Stop gracefully (SIGTERM, then SIGKILL). True if it was running."""
        return process.terminate(
            self.pid_file, self.settings.stop_timeout if timeout is None else timeout
        )
