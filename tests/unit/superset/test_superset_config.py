"""superset/superset_config.py: which PostgreSQL role a Superset user's serving queries
run as, and that it derives roles and passwords exactly as the platform does."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType

import pytest

from lakehouse.credentials import Credentials
from lakehouse.serving import roles

CONFIG = Path(__file__).resolve().parents[3] / "superset" / "superset_config.py"
SECRET = "a-serving-secret-for-tests"


@dataclass(frozen=True)
class Url:
    """The part of SQLAlchemy's URL the mutator uses."""

    drivername: str = "postgresql+psycopg2"
    username: str = roles.ANONYMOUS_ROLE
    password: str = "x"
    host: str = "127.0.0.1"
    port: int = 15432
    database: str = "lakehouse"

    def set(self, **changes: str) -> Url:
        return replace(self, **changes)


@dataclass
class Role:
    name: str


@dataclass
class User:
    roles: list[Role] = field(default_factory=list)


class SecurityManager:
    def __init__(self, users: dict[str, User]) -> None:
        self.users = users

    def find_user(self, username: str) -> User | None:
        return self.users.get(username)


@pytest.fixture
def config(tmp_path, monkeypatch) -> ModuleType:
    runtime = tmp_path / "runtime.json"
    runtime.write_text(json.dumps({
        "secret_key": "k", "metadata_uri": "postgresql://", "data_dir": str(tmp_path),
        "serving": {"host": "127.0.0.1", "port": 15432, "database": "lakehouse",
                    "schema": "serving", "secret": SECRET,
                    "anonymous_role": roles.ANONYMOUS_ROLE,
                    "all_tenants_role": roles.ALL_TENANTS_ROLE,
                    "tenant_prefix": roles.TENANT_PREFIX},
    }))  # fmt: skip
    monkeypatch.setenv("LAKEHOUSE_SUPERSET_RUNTIME", str(runtime))
    spec = importlib.util.spec_from_file_location("superset_config_under_test", CONFIG)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _credentials() -> Credentials:
    return Credentials("u", "p", "s", {}, serving_secret=SECRET)


LONG_TENANT = "t" * 60

USERS = {
    "admin": User([Role("Admin")]),
    "alice": User([Role("Business"), Role("tenant:acme")]),
    "long": User([Role("Business"), Role(f"tenant:{LONG_TENANT}")]),
    "two": User([Role("Business"), Role("tenant:acme"), Role("tenant:globex")]),
    "none": User([Role("Business")]),
}


@pytest.mark.parametrize(
    ("username", "role"),
    [
        ("alice", roles.tenant_role("acme")),
        ("long", roles.tenant_role(LONG_TENANT)),
        ("admin", roles.ALL_TENANTS_ROLE),
        ("two", roles.ANONYMOUS_ROLE),
        ("none", roles.ANONYMOUS_ROLE),
        ("nobody", roles.ANONYMOUS_ROLE),
        (None, roles.ANONYMOUS_ROLE),
    ],
)
def test_serving_queries_log_in_as_the_users_tenant_role(config, username, role):
    url, params = config.DB_CONNECTION_MUTATOR(
        Url(), {"poolclass": None}, username, SecurityManager(USERS), None
    )
    assert url.username == role
    assert url.password == roles.role_password(_credentials(), role)
    assert params == {"poolclass": None}


def test_other_databases_are_left_alone(config):
    for other in (Url(database="superset"), Url(port=8080), Url(drivername="trino")):
        url, _ = config.DB_CONNECTION_MUTATOR(other, {}, "alice", SecurityManager(USERS), None)
        assert url == other


def test_a_long_tenant_name_maps_to_a_role_postgresql_accepts():
    assert len(roles.tenant_role(LONG_TENANT)) <= 63
    assert roles.tenant_role("acme") == "tenant_acme"
