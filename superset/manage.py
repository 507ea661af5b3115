"""Lakehouse administration inside Superset's app (runs in Superset's virtualenv).

    manage.py init                      admin user, Business role, assets imported
    manage.py user NAME TENANT          a business user of TENANT (password on stdin)
    manage.py users                     every user as JSON (name, tenant, roles, active)
    manage.py disable|enable NAME       stop or allow NAME's logins and sessions
    manage.py remove NAME               delete NAME (kept inactive if Superset refuses)
    manage.py reset NAME                a new password for NAME (on stdin)

The assets under `assets/` are Superset's own export format (databases, datasets,
charts, dashboards as YAML), imported with overwrite, so what is reviewed in a pull
request is what users get. Database addresses and passwords are filled in here from
the runtime file; the YAML holds none.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

# Beside this script; the same derivation the connection mutator uses.
from superset_config import role_password

RUNTIME = json.loads(Path(os.environ["LAKEHOUSE_SUPERSET_RUNTIME"]).read_text())
BUSINESS_ROLE = "Business"
TENANT_ROLE_PREFIX = "tenant:"
SERVING_DATABASE = "databases/serving.yaml"
TRINO_DATABASE = "databases/trino.yaml"


def _bundle() -> tuple[dict[str, str], dict[str, str]]:
    """The assets as an import bundle, with this installation's addresses and passwords."""
    root = Path(RUNTIME["assets"])
    serving, trino = RUNTIME["serving"], RUNTIME["trino"]
    contents = {
        "metadata.yaml": yaml.safe_dump(
            {"version": "1.0.0", "type": "assets", "timestamp": "2026-01-01T00:00:00+00:00"}
        )
    }
    for path in sorted(root.rglob("*.yaml")):
        name = path.relative_to(root).as_posix()
        config = yaml.safe_load(path.read_text())
        if name == SERVING_DATABASE:
            config["sqlalchemy_uri"] = (
                f"postgresql+psycopg2://{serving['anonymous_role']}:XXXXXXXXXX"
                f"@{serving['host']}:{serving['port']}/{serving['database']}"
            )
        elif name == TRINO_DATABASE and trino["secure"]:
            config["sqlalchemy_uri"] = (
                f"trino://{trino['user']}:XXXXXXXXXX@{trino['host']}:{trino['port']}/lake"
            )
            config["extra"] = {
                "engine_params": {"connect_args": {"http_scheme": "https", "verify": trino["ca"]}}
            }
        elif name == TRINO_DATABASE:  # security off: plain HTTP, no password
            config["sqlalchemy_uri"] = (
                f"trino://{trino['user']}@{trino['host']}:{trino['port']}/lake"
            )
            config["extra"] = {"engine_params": {"connect_args": {"http_scheme": "http"}}}
        elif name.startswith("datasets/serving/"):
            config["schema"] = serving["schema"]
        contents[name] = yaml.safe_dump(config, sort_keys=False)
    passwords = {SERVING_DATABASE: role_password(serving["anonymous_role"])}
    if trino["secure"]:
        passwords[TRINO_DATABASE] = trino["password"]
    return contents, passwords


def import_assets(sm: Any) -> None:
    from flask import g
    from superset.commands.importers.v1.assets import ImportAssetsCommand

    g.user = sm.find_user(username=RUNTIME["admin"]["username"])  # imports as the admin
    contents, passwords = _bundle()
    ImportAssetsCommand(contents, passwords=passwords).run()
    print(f"imported {len(contents) - 1} asset file(s)")


def ensure_admin(sm: Any) -> None:
    admin = RUNTIME["admin"]
    user = sm.find_user(username=admin["username"])
    if user is None:
        sm.add_user(
            admin["username"], "Lakehouse", "Admin", f"{admin['username']}@lakehouse.invalid",
            sm.find_role("Admin"), password=admin["password"],
        )  # fmt: skip
    else:
        sm.reset_password(user.id, admin["password"])


# Gamma permissions a business user does not get: themes are shared by every tenant and
# have no owner, so writing one would change (or delete) what other tenants see; user
# registrations are the administrators' business.
NOT_FOR_BUSINESS = {("can_write", "Theme")}
NOT_FOR_BUSINESS_VIEWS = {"UserRegistrationsRestAPI"}


def ensure_business_role(sm: Any) -> Any:
    """Gamma's permissions (dashboards, charts, no SQL Lab) but writing themes, plus the
    serving schema (not the whole serving database: its other schemas, listed by
    PostgreSQL's catalogs to anyone, stay out of Superset's schema and table lists)."""
    from superset.models.core import Database

    from superset import db

    role = sm.find_role(BUSINESS_ROLE) or sm.add_role(BUSINESS_ROLE)
    permissions = [
        pv
        for pv in sm.find_role("Gamma").permissions
        if (pv.permission.name, pv.view_menu.name) not in NOT_FOR_BUSINESS
        and pv.view_menu.name not in NOT_FOR_BUSINESS_VIEWS
    ]
    serving = db.session.query(Database).filter_by(database_name="Serving").one_or_none()
    if serving is not None:
        # Datasets name no catalog; the API qualifies a table it is asked about with the
        # database's default one: both spellings of the one schema.
        schema = RUNTIME["serving"]["schema"]
        for catalog in (None, serving.get_default_catalog()):
            perm = sm.get_schema_perm(serving.database_name, catalog, schema)
            permissions.append(sm.add_permission_view_menu("schema_access", perm))
    role.permissions = permissions
    db.session.commit()
    return role


def ensure_tenant_user(sm: Any, name: str, tenant: str, password: str) -> None:
    from superset import db

    business = sm.find_role(BUSINESS_ROLE)
    tenant_role = sm.find_role(f"{TENANT_ROLE_PREFIX}{tenant}") or sm.add_role(
        f"{TENANT_ROLE_PREFIX}{tenant}"
    )
    user = sm.find_user(username=name)
    if user is None:
        sm.add_user(
            name, name, tenant, f"{name}@{tenant}.lakehouse.invalid", [business, tenant_role],
            password=password,
        )  # fmt: skip
        return
    user.roles = [business, tenant_role]
    user.active = True  # adding a user again brings a disabled one back
    db.session.commit()
    sm.reset_password(user.id, password)


def list_users(sm: Any) -> list[dict[str, Any]]:
    users = []
    for user in sm.get_all_users():
        roles = sorted(role.name for role in user.roles)
        tenants = [r[len(TENANT_ROLE_PREFIX) :] for r in roles if r.startswith(TENANT_ROLE_PREFIX)]
        users.append({
            "name": user.username, "tenant": tenants[0] if len(tenants) == 1 else None,
            "roles": roles, "active": bool(user.active),
        })  # fmt: skip
    return users


def change_user(sm: Any, action: str, name: str, password: str | None) -> dict[str, Any] | None:
    """Disable, enable, remove or reset `name`; None when there is no such user.

    Superset (Flask-AppBuilder) loads the user of every session cookie and API token
    on each request and treats an inactive or missing one as logged out, so a change
    holds for sessions already open."""
    from superset import db

    user = sm.find_user(username=name)
    if user is None:
        return None
    if action in ("disable", "enable"):
        user.active = action == "enable"
        db.session.commit()
        return {"name": name, "active": user.active}
    if action == "reset":
        sm.reset_password(user.id, password)
        return {"name": name, "active": bool(user.active)}
    # remove: inactive and without roles first, so a refused delete still locks it out
    user.active = False
    user.roles = []
    db.session.commit()
    return {"name": name, "active": False, "removed": bool(sm.delete_user(user))}


def main(argv: list[str]) -> int:
    from superset.app import create_app

    app = create_app()
    with app.app_context():
        from superset import security_manager as sm

        if argv[:1] == ["init"]:
            ensure_admin(sm)
            import_assets(sm)
            ensure_business_role(sm)
            return 0
        if argv[:1] == ["user"] and len(argv) == 3:
            password = sys.stdin.read().strip()
            if len(password) < 12:
                print("a password of at least 12 characters is expected on stdin")
                return 2
            ensure_business_role(sm)
            ensure_tenant_user(sm, argv[1], argv[2], password)
            return 0
        if argv == ["users"]:
            print(json.dumps(list_users(sm)))
            return 0
        if argv[:1] in (["disable"], ["enable"], ["remove"], ["reset"]) and len(argv) == 2:
            password = sys.stdin.read().strip() if argv[0] == "reset" else None
            if password is not None and len(password) < 12:
                print("a password of at least 12 characters is expected on stdin")
                return 2
            print(json.dumps(change_user(sm, argv[0], argv[1], password)))  # null: no such user
            return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
