"""The platform's image, built with podman from compose/Dockerfile once per session, and
namespaces of their own for the containers that write to the lake."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from lakehouse_testing.bronze_writer import create_environment, drop_environment

from lakehouse.clients import iceberg_catalog
from lakehouse.config import default_settings
from lakehouse.credentials import Credentials, as_keys
from lakehouse.tls import ca_path
from tests.containers.podman import build, ensure_base_image, give_to_image_user

IMAGE = "localhost/lakehouse:test"
SUPERSET_IMAGE = "localhost/lakehouse-superset:test"


@pytest.fixture(scope="session")
def platform_image() -> str:
    ensure_base_image(default_settings().cache_dir)
    build(IMAGE, "compose/Dockerfile")
    return IMAGE


@pytest.fixture(scope="session")
def superset_image() -> str:
    ensure_base_image(default_settings().cache_dir)
    build(SUPERSET_IMAGE, "compose/superset.Dockerfile")
    return SUPERSET_IMAGE


@pytest.fixture(scope="module")
def lake_prefix(stack, stack_settings, credentials) -> Iterator[str]:
    """`<prefix>bronze` … `<prefix>platinum` for one module's containers: what they
    ingest, transform and compact stays there, so the stack's own tables are as the
    other tests expect them."""
    prefix = f"c{uuid.uuid4().hex[:8]}_"
    catalog = iceberg_catalog(stack_settings, credentials, s3_key="ingest")
    create_environment(catalog, prefix)
    yield prefix
    drop_environment(iceberg_catalog(stack_settings, credentials, s3_key="ingest"), prefix)


def lake_environment(prefix: str) -> dict[str, str]:
    """The variables that keep a container's writes in the `prefix` namespaces."""
    return {
        "LAKEHOUSE_INGEST_NAMESPACE": f"{prefix}bronze",
        "LAKEHOUSE_TRANSFORM_SCHEMA_PREFIX": prefix,
        # Serving is the tenants' one schema; the prefixed layers do not publish into it.
        "LAKEHOUSE_SERVING_PUBLISH_AFTER_TRANSFORM": "false",
    }


def mounted_secrets(root: Path, credentials: Credentials, home: Path) -> tuple[Path, Path]:
    """`root/credentials`, one 0600 file per secret as a mounted Secret holds them, owned
    by the image's user; and `root/tls` with the stack's CA (at home/tls/ca.pem)."""
    secrets = root / "credentials"
    secrets.mkdir(mode=0o700)
    for key, value in as_keys(credentials).items():
        (secrets / key).write_text(value)
        (secrets / key).chmod(0o600)
        give_to_image_user(secrets / key)
    give_to_image_user(secrets)
    tls = root / "tls"
    tls.mkdir()
    shutil.copyfile(ca_path(home), tls / "ca.pem")
    return secrets, tls
