"""What every deployment of the platform shares: the native stack, docker compose and Helm.

The native stack's settings are the source of truth for ports, the topic, namespaces,
the catalog, principals and secrets. `python -m lakehouse.deployment` writes them where
the chart (`helm/lakehouse/platform.json`) and compose (`compose/platform.env`) read
them; a unit test fails when either file is out of date, and another when a service the
supervisor runs is missing from the chart or from compose.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from lakehouse.config import Settings, default_settings
from lakehouse.credentials import (
    AUDIT_WRITER_ROLE,
    DATABASE_ROLES,
    KAFKA_PRINCIPALS,
    MINIO_KEYS,
    READER_ROLE,
    TRINO_PRINCIPALS,
    Credentials,
    as_keys,
)
from lakehouse.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "lakehouse"
CHART_FACTS = CHART / "platform.json"
CHART_README = CHART / "README.md"
VALUES_START, VALUES_END = "<!-- values:start -->", "<!-- values:end -->"
COMPOSE_FACTS = ROOT / "compose" / "platform.env"
# Trino's catalog of the lake (the Nessie main branch), as the native stack names it.
LAKE_CATALOG = "lake"
# Where a deployment mounts the secrets, one file per key (see lakehouse.credentials).
CREDENTIALS_DIR = "/var/run/lakehouse/credentials"
# A container's home: private state only, on a volume of its own.
CONTAINER_HOME = "/var/lib/lakehouse"
_NATIVE_CONSUMER = re.compile(r"^consumer-[0-9]+$")


@dataclass(frozen=True)
class Component:
    """One deployable part: a server, a service of ours, or a job."""

    kind: str  # server | service | job
    port: int | None
    # Reached from outside the release (devices, browsers, analysts' SQL clients).
    public: bool
    # Components it opens connections to: network policies and start order follow them.
    needs: tuple[str, ...]
    metrics_port: int | None = None


def components(settings: Settings) -> dict[str, Component]:
    """Every part a deployment runs, by the name the chart and compose give it."""
    s = settings
    lake = ("nessie", "minio")
    return {
        "postgres": Component("server", s.postgres.port, False, ()),
        "minio": Component("server", s.minio.port, False, ()),
        "nessie": Component("server", s.nessie.port, False, ("postgres", "minio")),
        "kafka": Component("server", s.kafka.port, False, ("kafka",)),
        "trino": Component("server", s.trino.port, True, (*lake, "postgres", "audit", "trino")),
        "superset": Component("server", s.superset.port, True, ("postgres", "trino")),
        "audit": Component("service", s.audit.port, False, ("postgres",)),
        "gateway": Component("service", s.gateway.port, True, ("postgres", "kafka")),
        "consumers": Component(
            "service", None, False, ("kafka", *lake, "postgres"), s.ingest.metrics_port
        ),
        "transform": Component(
            "service", None, False, ("trino", *lake, "postgres"), s.transform.metrics_port
        ),
        "maintain": Component(
            "service", None, False, ("trino", *lake, "postgres", "kafka"), s.maintain.metrics_port
        ),
        "bootstrap": Component("job", None, False, ("postgres", "minio", "nessie", "kafka")),
        # Off unless asked for outside the native stack: a demo, not a workload.
        "demo": Component("service", None, False, ("gateway", "postgres"), s.demo_metrics_port),
    }


def component_of(native_service: str) -> str:
    """The deployment component that runs a native supervisor service (consumer-2 is one
    replica of `consumers`)."""
    return "consumers" if _NATIVE_CONSUMER.match(native_service) else native_service


def secret_keys() -> list[str]:
    """The keys of the platform's Secret, one per credential (files in CREDENTIALS_DIR)."""
    return list(as_keys(Credentials.generate(default_settings())))


def facts(settings: Settings) -> dict[str, Any]:
    """Everything the chart and compose take from the native stack's settings."""
    s = settings
    return {
        "components": {name: asdict(c) for name, c in components(s).items()},
        "ports": {
            "minioConsole": s.minio.console_port,
            "nessieManagement": s.nessie.management_port,
            "kafkaController": s.kafka.controller_port,
            # Trino nodes talk among themselves over HTTP with the shared secret, on a
            # port only they may reach; clients use HTTPS with passwords.
            "trinoInternal": s.trino.port + 1,
        },
        "kafka": {
            "topic": s.kafka.topic,
            "partitions": s.kafka.partitions,
            "group": s.ingest.group_id,
            "principals": list(KAFKA_PRINCIPALS),
        },
        "lake": {
            "bucket": s.minio.bucket,
            "warehouse": s.nessie.warehouse,
            "region": s.minio.region,
            "namespaces": list(s.namespaces),
            "catalog": LAKE_CATALOG,
        },
        "trino": {"principals": dict(TRINO_PRINCIPALS)},
        "postgres": {
            "superuser": s.postgres.superuser,
            "databases": list(DATABASE_ROLES),
            "readerRole": READER_ROLE,
            "auditWriterRole": AUDIT_WRITER_ROLE,
        },
        "minio": {"rootUser": s.minio.root_user, "keys": list(MINIO_KEYS)},
        "superset": {"adminUser": s.superset.admin_user},
        "secretKeys": secret_keys(),
        "paths": {"credentials": CREDENTIALS_DIR, "home": CONTAINER_HOME},
    }


def compose_env(settings: Settings) -> dict[str, str]:
    """The same facts as compose variables (`${LAKEHOUSE_GATEWAY_PORT}` and the like)."""
    # Named as the settings are, so the file doubles as our containers' environment.
    prefix = {"consumers": "INGEST"}
    env = {
        f"LAKEHOUSE_{name.upper()}_PORT": str(c.port)
        for name, c in components(settings).items()
        if c.port is not None
    }
    env |= {
        f"LAKEHOUSE_{prefix.get(name, name.upper())}_METRICS_PORT": str(c.metrics_port)
        for name, c in components(settings).items()
        if c.metrics_port is not None
    }
    env |= {
        "LAKEHOUSE_MINIO_CONSOLE_PORT": str(settings.minio.console_port),
        "LAKEHOUSE_NESSIE_MANAGEMENT_PORT": str(settings.nessie.management_port),
        "LAKEHOUSE_KAFKA_CONTROLLER_PORT": str(settings.kafka.controller_port),
        "LAKEHOUSE_KAFKA_TOPIC": settings.kafka.topic,
        "LAKEHOUSE_KAFKA_PARTITIONS": str(settings.kafka.partitions),
        "LAKEHOUSE_MINIO_BUCKET": settings.minio.bucket,
        "LAKEHOUSE_MINIO_ROOT_USER": settings.minio.root_user,
        "LAKEHOUSE_NESSIE_WAREHOUSE": settings.nessie.warehouse,
        "LAKEHOUSE_CREDENTIALS_DIR": CREDENTIALS_DIR,
        "LAKEHOUSE_HOME": CONTAINER_HOME,
    }
    return dict(sorted(env.items()))


HEADER = "Written by `make deploy-facts` from the native stack's settings; do not edit."


def render_chart_facts(settings: Settings) -> str:
    return json.dumps({"about": HEADER, **facts(settings)}, indent=2, sort_keys=True) + "\n"


def render_compose_env(settings: Settings) -> str:
    lines = [f"# {HEADER}"] + [f"{k}={v}" for k, v in compose_env(settings).items()]
    return "\n".join(lines) + "\n"


def values_table(values_text: str) -> str:
    """The chart's values as a Markdown table, from their `# --` comments (helm-docs
    style: a comment documents the key below it, continued by the `#` lines after it)."""
    values = yaml.safe_load(values_text)
    rows = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    path: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in values_text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("# -- "):
            pending = [stripped[5:]]
            continue
        if stripped.startswith("#"):
            if pending is not None and stripped.startswith("# "):
                pending.append(stripped[2:])
            continue
        key = re.match(r"^([A-Za-z][A-Za-z0-9]*):", stripped)
        if not key or stripped.startswith("- "):
            continue
        path = [(i, k) for i, k in path if i < indent] + [(indent, key.group(1))]
        if pending is None:
            continue
        dotted = ".".join(k for _, k in path)
        value: Any = values
        for _, k in path:
            value = value[k]
        default = json.dumps(value, separators=(", ", ": "))
        rows.append(f"| `{dotted}` | {_type_name(value)} | `{default}` | {' '.join(pending)} |")
        pending = None
    return "\n".join(rows)


def _type_name(value: object) -> str:
    names = {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}
    return names.get(type(value), "string")


def render_chart_readme(current: str, values_text: str) -> str:
    """The chart's README with its values table made anew."""
    if VALUES_START not in current or VALUES_END not in current:
        raise ConfigError(f"{CHART_README} lacks the {VALUES_START} … {VALUES_END} markers")
    head, rest = current.split(VALUES_START, 1)
    _, tail = rest.split(VALUES_END, 1)
    return f"{head}{VALUES_START}\n{values_table(values_text)}\n{VALUES_END}{tail}"


def outputs() -> dict[Path, str]:
    settings = default_settings()
    return {
        CHART_FACTS: render_chart_facts(settings),
        COMPOSE_FACTS: render_compose_env(settings),
        CHART_README: render_chart_readme(
            CHART_README.read_text(), (CHART / "values.yaml").read_text()
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args(argv)
    stale = {path: text for path, text in outputs().items() if not _same(path, text)}
    if args.check:
        for path in stale:
            sys.stderr.write(f"{path.relative_to(ROOT)} is out of date: run `make deploy-facts`\n")
        return 1 if stale else 0
    for path, text in stale.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


def _same(path: Path, text: str) -> bool:
    return path.exists() and path.read_text() == text


if __name__ == "__main__":
    sys.exit(main())
