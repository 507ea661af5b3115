"""Superset configuration of the lakehouse.

Everything that differs per installation (secrets, addresses) comes from the runtime
file that `lakehouse stack up` writes (0600) and names in LAKEHOUSE_SUPERSET_RUNTIME.
This file runs inside Superset's own virtualenv: standard library only.

Who sees what: business users query the PostgreSQL serving database, and every query
they run connects as their tenant's PostgreSQL login role (DB_CONNECTION_MUTATOR
below), so PostgreSQL's row-level security, not Superset, decides which rows they get.
Administrators connect as the all-tenants role. Anyone else (a user without exactly
one tenant) connects as the anonymous role, which sees no rows. Business users have no
SQL Lab; the Trino database is for administrators and analysts.

Which of Superset's own objects (charts, dashboards, the users in owner lists) a
business user reaches is limited to their tenant by lakehouse_tenancy.py, beside this
file; their role (manage.py) holds the serving schema only and no theme writes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lakehouse_tenancy import related_users, scope_to_tenants  # beside this file

_RUNTIME = json.loads(Path(os.environ["LAKEHOUSE_SUPERSET_RUNTIME"]).read_text())
_SERVING = _RUNTIME["serving"]
_MAX_IDENTIFIER = 63
TENANT_ROLE_PREFIX = "tenant:"

SECRET_KEY = _RUNTIME["secret_key"]
SQLALCHEMY_DATABASE_URI = _RUNTIME["metadata_uri"]
DATA_DIR = _RUNTIME["data_dir"]

# Query results are never cached: a cached result carries no PostgreSQL identity, and
# the same chart returns different rows to different tenants.
DATA_CACHE_CONFIG = {"CACHE_TYPE": "NullCache"}
CACHE_CONFIG = {"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 300}
FILTER_STATE_CACHE_CONFIG = {"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 3600}
EXPLORE_FORM_DATA_CACHE_CONFIG = {"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 3600}
RATELIMIT_STORAGE_URI = "memory://"

FEATURE_FLAGS = {
    "DASHBOARD_RBAC": False,
    "ENABLE_TEMPLATE_PROCESSING": False,
    "ALERT_REPORTS": False,
    "THUMBNAILS": False,
}
# No map tiles or other resources from outside: the platform runs without internet.
MAPBOX_API_KEY = ""
WTF_CSRF_ENABLED = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_HTTPONLY = True
PREVENT_UNSAFE_DB_CONNECTIONS = True
FAB_ADD_SECURITY_API = True
SUPERSET_WEBSERVER_TIMEOUT = 120
SQLLAB_CTAS_NO_LIMIT = False
ROW_LIMIT = 10000

# Charts, dashboards and user lists of a business user's own tenant only.
FLASK_APP_MUTATOR = scope_to_tenants
EXTRA_RELATED_QUERY_FILTERS = {"user": related_users}


def role_password(role: str) -> str:
    """A serving role's password, derived as lakehouse.serving.roles derives it."""
    digest = hmac.new(
        _SERVING["secret"].encode(), f"postgres-role:{role}".encode(), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _tenant_role(tenant: str) -> str:
    name = f"{_SERVING['tenant_prefix']}{tenant}"
    if len(name.encode()) <= _MAX_IDENTIFIER:
        return name
    return f"{_SERVING['tenant_prefix']}{hashlib.sha256(tenant.encode()).hexdigest()[:40]}"


def _is_serving(uri: Any) -> bool:
    return (
        uri.drivername.startswith("postgresql")
        and uri.database == _SERVING["database"]
        and uri.host == _SERVING["host"]
        and int(uri.port or 5432) == int(_SERVING["port"])
    )


def serving_role_of(username: str | None, security_manager: Any) -> str:
    """The PostgreSQL role a Superset user's serving queries run as."""
    user = security_manager.find_user(username=username) if username else None
    if user is None:
        return str(_SERVING["anonymous_role"])
    names = [role.name for role in user.roles]
    if "Admin" in names:
        return str(_SERVING["all_tenants_role"])
    tenants = [n[len(TENANT_ROLE_PREFIX) :] for n in names if n.startswith(TENANT_ROLE_PREFIX)]
    if len(tenants) != 1:
        return str(_SERVING["anonymous_role"])
    return _tenant_role(tenants[0])


def DB_CONNECTION_MUTATOR(
    uri: Any, params: dict[str, Any], username: str | None, security_manager: Any, source: Any
) -> tuple[Any, dict[str, Any]]:
    if not _is_serving(uri):
        return uri, params
    role = serving_role_of(username, security_manager)
    return uri.set(username=role, password=role_password(role)), params
