"""The platform's image, built with podman from compose/Dockerfile once per session."""

from __future__ import annotations

import pytest

from lakehouse.config import default_settings
from tests.containers.podman import build, ensure_base_image

IMAGE = "localhost/lakehouse:test"


@pytest.fixture(scope="session")
def platform_image() -> str:
    ensure_base_image(default_settings().cache_dir)
    build(IMAGE, "compose/Dockerfile")
    return IMAGE
