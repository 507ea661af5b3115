"""The platform's own long-running services, run by the supervisor like the servers.

Each is a `lakehouse …` command in its own process: the upload gateway, the bronze
consumers (one process each, one consumer group), the transform loop and the
maintenance loop. They get the
stack's settings as `LAKEHOUSE_*` variables and nothing else of the environment.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from lakehouse.config import Settings
from lakehouse.stack.process import port_accepts
from lakehouse.stack.service import Service, StackContext
from lakehouse.stack.users import check_traversable

LAKEHOUSE_CLI = (sys.executable, "-m", "lakehouse")


class AppService(Service):
    """A service of ours: nothing to obtain or configure, settings through the environment."""

    kind = "service"

    @property
    def start_timeout(self) -> float:
        return 60.0

    def obtain(self) -> None:
        """Runs from this installation; nothing to fetch."""

    def configure(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        user = self.run_as()
        if user is not None:
            # A virtualenv made from an interpreter under /root cannot run as the user.
            check_traversable(Path(sys.executable).resolve(), user)

    def env(self) -> dict[str, str]:
        return {**self.settings.to_env(), "LAKEHOUSE_LOG_LEVEL": "INFO"}


class AuditReceiver(AppService):
    """Stores Trino's query events in audit.events (lakehouse.audit_receiver)."""

    name = "audit"

    @property
    def ports(self) -> list[int]:
        return [self.settings.audit.port]

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.audit.port}"

    def command(self) -> list[str]:
        return [*LAKEHOUSE_CLI, "audit", "serve"]

    def ready(self) -> bool:
        return httpx.get(f"{self.url}/healthz", timeout=3).status_code == 200


class Gateway(AppService):
    name = "gateway"

    @property
    def ports(self) -> list[int]:
        return [self.settings.gateway.port]

    @property
    def bind_host(self) -> str:
        return self.settings.gateway.host

    @property
    def url(self) -> str:
        return gateway_url(self.settings)

    def command(self) -> list[str]:
        return [*LAKEHOUSE_CLI, "gateway"]

    def ready(self) -> bool:
        # Liveness only: /readyz is false while PostgreSQL or Kafka is down, which the
        # gateway rides out by answering 503; restarting it would not help. The probe
        # is local, so it need not verify a certificate issued for the LAN name.
        response = httpx.get(f"{self.url}/healthz", timeout=3, verify=False)  # noqa: S501
        return response.status_code == 200


def gateway_url(settings: Settings) -> str:
    """The gateway as this machine reaches it (loopback when it listens everywhere)."""
    host = settings.gateway.host
    local = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - reading it
    scheme = "https" if settings.gateway.tls_cert else "http"
    return f"{scheme}://{local}:{settings.gateway.port}"


class Consumer(AppService):
    """Bronze consumer number `index` (1-based), with its own metrics port."""

    def __init__(self, ctx: StackContext, index: int) -> None:
        super().__init__(ctx)
        self.index = index
        self.name = f"consumer-{index}"  # type: ignore[misc]

    @property
    def metrics_port(self) -> int:
        return self.settings.ingest.metrics_port + self.index - 1

    @property
    def ports(self) -> list[int]:
        return [self.metrics_port]

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        return [
            *LAKEHOUSE_CLI, "ingest", "kafka",
            "--metrics-port", str(self.metrics_port),
            # Static membership: a restarted consumer gets its partitions back at once.
            "--instance-id", f"{self.settings.ingest.group_id}-{self.index}",
        ]  # fmt: skip

    def ready(self) -> bool:
        return port_accepts(self.settings.host, self.metrics_port, timeout=3)


class TransformLoop(AppService):
    name = "transform"

    @property
    def ports(self) -> list[int]:
        return [self.settings.transform.metrics_port]

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.transform.metrics_port}/metrics"

    def command(self) -> list[str]:
        every = self.settings.supervisor.transform_every
        watch = self.settings.supervisor.transform_watch
        return [
            *LAKEHOUSE_CLI, "transform", "--every", f"{every:g}", "--watch", f"{watch:g}",
            "--quiet",
            "--metrics-port", str(self.settings.transform.metrics_port),
        ]  # fmt: skip

    def ready(self) -> bool:
        return port_accepts(self.settings.host, self.settings.transform.metrics_port, timeout=3)


class MaintainLoop(AppService):
    """Compaction every pass, garbage collection and retention when due."""

    name = "maintain"

    @property
    def ports(self) -> list[int]:
        return [self.settings.maintain.metrics_port]

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.maintain.metrics_port}/metrics"

    def command(self) -> list[str]:
        every = self.settings.supervisor.maintain_every
        return [
            *LAKEHOUSE_CLI, "maintain", "--every", f"{every:g}",
            "--metrics-port", str(self.settings.maintain.metrics_port),
        ]  # fmt: skip

    def ready(self) -> bool:
        return port_accepts(self.settings.host, self.settings.maintain.metrics_port, timeout=3)


class DemoFleet(AppService):
    """The demo fleet (lakehouse.demo): devices sending through the gateway."""

    name = "demo"

    @property
    def ports(self) -> list[int]:
        return [self.settings.demo_metrics_port]

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.demo_metrics_port}/metrics"

    @property
    def start_timeout(self) -> float:
        # The first start registers the fleet, waiting out PostgreSQL if need be.
        return 180.0

    def command(self) -> list[str]:
        return [*LAKEHOUSE_CLI, "demo", "--metrics-port", str(self.settings.demo_metrics_port)]

    def ready(self) -> bool:
        return port_accepts(self.settings.host, self.settings.demo_metrics_port, timeout=3)


def app_services(ctx: StackContext) -> list[Service]:
    """The services of ours that the settings enable, in start order."""
    supervisor = ctx.settings.supervisor
    services: list[Service] = []
    if ctx.settings.audit.trino_queries:
        services.append(AuditReceiver(ctx))
    if supervisor.gateway:
        services.append(Gateway(ctx))
    services.extend(Consumer(ctx, i) for i in range(1, supervisor.consumers + 1))
    if supervisor.transform_every > 0:
        services.append(TransformLoop(ctx))
    if supervisor.maintain_every > 0:
        services.append(MaintainLoop(ctx))
    if ctx.settings.demo and supervisor.gateway:
        services.append(DemoFleet(ctx))
    return services


def app_ports(settings: Settings) -> dict[str, int]:
    """Ports the enabled services of ours bind, by service name."""
    supervisor = settings.supervisor
    ports: dict[str, int] = {}
    if settings.audit.trino_queries:
        ports["audit"] = settings.audit.port
    if supervisor.gateway:
        ports["gateway"] = settings.gateway.port
    for i in range(1, supervisor.consumers + 1):
        ports[f"consumer-{i}"] = settings.ingest.metrics_port + i - 1
    if supervisor.transform_every > 0:
        ports["transform"] = settings.transform.metrics_port
    if supervisor.maintain_every > 0:
        ports["maintain"] = settings.maintain.metrics_port
    if settings.demo and supervisor.gateway:
        ports["demo"] = settings.demo_metrics_port
    return ports
