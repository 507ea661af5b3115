"""What the supervisor reports about each service, kept in one JSON file under `run/`.

The supervisor rewrites the file (atomically) on every change and after every round
of health checks; `lakehouse stack status` and `stack up` read it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from lakehouse.config import Settings

State = Literal[
    "waiting", "starting", "running", "backoff", "failed", "held", "stopping", "stopped"
]


@dataclass
class ServiceState:
    """One service as the supervisor sees it."""

    name: str
    kind: Literal["server", "service"]
    port: int
    url: str
    state: State = "stopped"
    pid: int | None = None
    healthy: bool = False
    # Unix time the current process started (None while none runs).
    started_at: float | None = None
    restarts: int = 0
    # Consecutive failures since the service was last stable.
    failures: int = 0
    last_exit: str | None = None
    # The last lines of the log when the service exited or failed.
    last_error: str | None = None

    def uptime(self, now: float) -> float | None:
        return None if self.started_at is None else max(now - self.started_at, 0.0)


@dataclass
class SupervisorState:
    """The whole file: the supervisor itself and its services in start order."""

    pid: int
    phase: Literal["starting", "running", "stopping", "stopped", "fatal"] = "starting"
    # Set when the supervisor gave up starting the stack (phase "fatal").
    error: str | None = None
    error_service: str | None = None
    services: list[ServiceState] = field(default_factory=list)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps(asdict(self), indent=1))
        partial.replace(path)

    @classmethod
    def read(cls, path: Path) -> SupervisorState | None:
        try:
            data = json.loads(path.read_text())
            services = [ServiceState(**row) for row in data.pop("services")]
            return cls(services=services, **data)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def service(self, name: str) -> ServiceState | None:
        return next((s for s in self.services if s.name == name), None)


def state_file(settings: Settings) -> Path:
    return settings.home / "run" / "supervisor.json"


def pid_file(settings: Settings) -> Path:
    return settings.home / "run" / "supervisor.pid"


def supervisor_log(settings: Settings) -> Path:
    return settings.home / "logs" / "supervisor.log"


def hold_file(settings: Settings, name: str) -> Path:
    return settings.home / "run" / "hold" / name
