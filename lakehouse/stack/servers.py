"""The stack's services in start order: the servers, then the enabled services of ours."""

from __future__ import annotations

from lakehouse.stack.apps import app_services
from lakehouse.stack.kafka import Kafka
from lakehouse.stack.minio import Minio
from lakehouse.stack.nessie import Nessie
from lakehouse.stack.postgres import Postgres
from lakehouse.stack.service import Service, StackContext
from lakehouse.stack.superset import Superset
from lakehouse.stack.trino import Trino

# Start order; each server only depends on the ones before it.
SERVICE_TYPES: tuple[type[Service], ...] = (Postgres, Minio, Nessie, Kafka, Trino, Superset)
SERVER_NAMES = tuple(service.name for service in SERVICE_TYPES)


def stack_services(ctx: StackContext) -> list[Service]:
    """Every service of the stack in start order."""
    return [service_type(ctx) for service_type in SERVICE_TYPES] + app_services(ctx)
