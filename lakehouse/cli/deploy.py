"""`lakehouse deploy …`: what a Kubernetes or compose deployment runs besides the servers.

- `bootstrap`: the one-off set-up the native stack does as it starts each server —
  roles and databases, the bucket and its scoped keys, namespaces and bronze tables, the
  topic and its ACLs — against servers elsewhere; idempotent, so it runs on every
  install and upgrade.
- `trino-security`: Trino's password, group and rules files from the mounted secrets.
- `secret`: a Kubernetes Secret (or a directory of files) with new credentials, for a
  deployment that brings its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lakehouse.cli.common import err, out, settings_of
from lakehouse.config import Settings
from lakehouse.credentials import Credentials, as_keys, load
from lakehouse.errors import ConfigError, StackError
from lakehouse.private_files import write_private
from lakehouse.retry import Backoff

deploy_app = typer.Typer(help="Set-up steps of a Kubernetes or docker compose deployment.")


BOOTSTRAP_STEPS = ("postgres", "minio", "nessie", "kafka", "serving")


@deploy_app.command("bootstrap")
def bootstrap(
    ctx: typer.Context,
    wait: Annotated[float, typer.Option(help="Seconds to wait for each server to answer.")] = 600.0,
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="Set up only these (repeatable; default all): "
            f"{', '.join(BOOTSTRAP_STEPS)}. Nessie needs the PostgreSQL and MinIO steps "
            "before it starts, so a deployment runs those first and the rest once it runs.",
        ),
    ] = None,
) -> None:
    """Create what the platform needs on its servers (idempotent)."""
    from lakehouse.serving.publish import ServingPublisher
    from lakehouse.stack.kafka import Kafka
    from lakehouse.stack.minio import Minio
    from lakehouse.stack.nessie import Nessie
    from lakehouse.stack.postgres import Postgres
    from lakehouse.stack.service import StackContext

    steps = set(only or BOOTSTRAP_STEPS)
    unknown = sorted(steps - set(BOOTSTRAP_STEPS))
    if unknown:
        raise ConfigError(
            f"unknown bootstrap step {', '.join(unknown)}",
            fix=f"choose among {', '.join(BOOTSTRAP_STEPS)}",
        )
    settings = settings_of(ctx)
    context = StackContext(settings, load(settings), Console(stderr=True))
    for service in (Postgres(context), Minio(context), Nessie(context), Kafka(context)):
        if service.name not in steps:
            continue
        _await(service.name, service.ready, wait)
        service.bootstrap()
        err.print(f"[green]✓[/] {service.name} set up")
    if "serving" in steps:
        # The serving schema's roles and row-level security, as Superset's start prepares them.
        ServingPublisher(settings, context.credentials).prepare()
        err.print("[green]✓[/] serving roles and policies set up")


def _await(name: str, ready: Callable[[], bool], timeout: float) -> None:
    """Wait until `ready()` is true, one line when waiting starts and one when it ends."""
    deadline = time.monotonic() + timeout
    delays = Backoff(initial=1.0, cap=15.0).delays()
    waiting = False
    while True:
        try:
            if ready():
                break
            reason = "not ready"
        except Exception as exc:  # any failure to answer means "not yet"
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if time.monotonic() >= deadline:
            raise StackError(
                f"{name} did not answer within {timeout:.0f} s ({reason})",
                fix=f"check that {name} runs and that this pod may reach it",
            )
        if not waiting:
            err.print(f"waiting for {name}: {reason}")
            waiting = True
        time.sleep(next(delays))
    if waiting:
        err.print(f"{name} answers")


@deploy_app.command("trino-security")
def trino_security(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the files to.")],
) -> None:
    """Write Trino's password.db, group.txt and rules.json (hashes, never passwords)."""
    from lakehouse.trino_access import write_files
    from lakehouse.trino_users import principals

    settings = settings_of(ctx)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in write_files(out_dir, principals(settings, load(settings))):
        err.print(f"wrote {path}")


@deploy_app.command("nessie-token")
def nessie_token_file(
    ctx: typer.Context,
    principal: Annotated[str, typer.Option(help="Who the token names (trino, ingest, …).")],
    target: Annotated[Path, typer.Option("--out", help="File to write the token to (0600).")],
) -> None:
    """A bearer token for Nessie, signed with the credentials' key, valid for a year."""
    from lakehouse.clients import nessie_token
    from lakehouse.names import checked

    settings = settings_of(ctx)
    write_private(target, nessie_token(load(settings), checked("principal", principal)))
    err.print(f"wrote {target} (a token for {principal})")


@deploy_app.command("tls")
def tls(
    ctx: typer.Context,
    target: Annotated[Path, typer.Option("--out", help="PEM file for the certificate and key.")],
    hosts: Annotated[list[str], typer.Option("--host", help="A name the server answers to.")],
) -> None:
    """A server certificate from the home's CA (made if missing: ca.pem, ca.key)."""
    from lakehouse.tls import ca_path, server_certificate

    settings = settings_of(ctx)
    server_certificate(settings.home, target, hosts[0], hosts)
    err.print(f"wrote {target}, issued by {ca_path(settings.home)}")


@deploy_app.command("superset-runtime")
def superset_runtime(
    ctx: typer.Context,
    target: Annotated[Path, typer.Option("--out", help="The runtime file to write (0600).")],
    assets: Annotated[Path, typer.Option(help="The dashboards' directory in that image.")],
    data_dir: Annotated[Path, typer.Option(help="Superset's writable data directory.")],
) -> None:
    """Write what superset_config.py reads: addresses, secrets, where the assets are."""
    from lakehouse.stack.service import StackContext
    from lakehouse.stack.superset import Superset

    settings = settings_of(ctx)
    context = StackContext(settings, load(settings), Console(stderr=True))
    runtime = Superset(context).runtime() | {"assets": str(assets), "data_dir": str(data_dir)}
    write_private(target, json.dumps(runtime, indent=2))
    err.print(f"wrote {target}")


@deploy_app.command("secret")
def secret(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="The Secret's name (the chart's existingSecret).")] = (
        "lakehouse-credentials"
    ),
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Write one 0600 file per key here instead (compose)."),
    ] = None,
) -> None:
    """New credentials: a Kubernetes Secret manifest on stdout, or files in --dir."""
    settings: Settings = settings_of(ctx)
    keys = as_keys(Credentials.generate(settings))
    if directory is not None:
        if directory.exists() and any(directory.iterdir()):
            raise ConfigError(
                f"{directory} is not empty: its credentials would be replaced",
                fix="choose a new directory; rotating secrets means changing each server",
            )
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        for key, value in keys.items():
            write_private(directory / key, value)
        err.print(f"wrote {len(keys)} credentials to {directory}")
        return
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "stringData": keys,
    }
    out.print(json.dumps(manifest, indent=2), markup=False, highlight=False, soft_wrap=True)


@deploy_app.command("keys")
def keys() -> None:
    """The keys a Secret for the chart's existingSecret must hold, one per line."""
    from lakehouse.deployment import secret_keys

    for key in secret_keys():
        out.print(key, markup=False, highlight=False)
