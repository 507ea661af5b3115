"""Which of Superset's own objects a business user sees: charts, dashboards, users.

PostgreSQL decides which rows a business user's queries return; this module decides
which Superset objects they reach. A business user belongs to one tenant (the Superset
role `tenant:<name>`). For them:

- a chart or dashboard created by a user of another tenant does not exist: Superset's
  Chart and Dashboard access filters, which every list, lookup by id, and the check of
  the dashboards a chart is attached to go through, leave it out (404, or "Dashboards
  do not exist" when attaching);
- what administrators created (the assets imported at start) stays shared;
- the related-user lists (owners, created by, changed by of charts, dashboards and
  datasets) hold their own tenant's users only, so no name or email of another tenant
  is listed.

Administrators, and code that runs outside a request (the CLI, the imports at start),
see everything. A user of no tenant, or of several, is of none: they see what no
tenant created, and only themselves in user lists.

Loaded by superset_config.py (FLASK_APP_MUTATOR, EXTRA_RELATED_QUERY_FILTERS); runs in
Superset's virtualenv, so Superset is imported only inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TENANT_ROLE_PREFIX = "tenant:"


@dataclass(frozen=True)
class Viewer:
    """A user whose view is limited to one tenant (or to none)."""

    tenant: str | None
    user_id: int | None


def viewer() -> Viewer | None:
    """Who the current request runs for; None when nothing is limited (an
    administrator, or no request at all)."""
    from flask import has_request_context

    from superset import security_manager as sm

    if not has_request_context() or sm.is_admin():
        return None
    names = [role.name for role in sm.get_user_roles()]
    tenants = [n[len(TENANT_ROLE_PREFIX) :] for n in names if n.startswith(TENANT_ROLE_PREFIX)]
    user = sm.current_user
    return Viewer(tenants[0] if len(tenants) == 1 else None, getattr(user, "id", None))


def _users_with_role(condition: Any) -> Any:
    """The ids of the users holding a role that meets `condition` (a SELECT)."""
    from flask_appbuilder.security.sqla.models import Role, assoc_user_role
    from sqlalchemy import select

    return (
        select(assoc_user_role.c.user_id)
        .join(Role, Role.id == assoc_user_role.c.role_id)
        .where(condition(Role.name))
    )


def _other_tenants_users(tenant: str | None) -> Any:
    def condition(name: Any) -> Any:
        of_a_tenant = name.startswith(TENANT_ROLE_PREFIX, autoescape=True)
        if tenant is None:
            return of_a_tenant
        return of_a_tenant & (name != f"{TENANT_ROLE_PREFIX}{tenant}")

    return _users_with_role(condition)


def visible_objects(model: Any) -> Any | None:
    """The condition on `model` (Slice or Dashboard) that leaves out what users of
    another tenant created; None when nothing is left out."""
    from sqlalchemy import or_

    who = viewer()
    if who is None:
        return None
    return or_(
        model.created_by_fk.is_(None),
        model.created_by_fk.not_in(_other_tenants_users(who.tenant)),
    )


def related_users(query: Any) -> Any:
    """EXTRA_RELATED_QUERY_FILTERS["user"]: the users a related-field list offers."""
    from superset import security_manager as sm

    who = viewer()
    if who is None:
        return query
    user = sm.user_model
    if who.tenant is None:
        return query.filter(user.id == who.user_id)
    own = f"{TENANT_ROLE_PREFIX}{who.tenant}"
    return query.filter(user.id.in_(_users_with_role(lambda name: name == own)))


def _limit(filter_class: Any, model: Any) -> None:
    """Make `filter_class` (a Superset access filter) also leave out other tenants'
    objects; idempotent."""
    if getattr(filter_class, "lakehouse_tenant_scoped", False):
        return
    original = filter_class.apply

    def apply(self: Any, query: Any, value: Any) -> Any:
        query = original(self, query, value)
        condition = visible_objects(model)
        return query if condition is None else query.filter(condition)

    filter_class.apply = apply
    filter_class.lakehouse_tenant_scoped = True


def scope_to_tenants(app: Any) -> None:
    """FLASK_APP_MUTATOR: limit the Chart and Dashboard access filters to the viewer's
    tenant. Superset's chart and dashboard APIs and DAOs all apply these two classes."""
    from superset.charts.filters import ChartFilter
    from superset.dashboards.filters import DashboardAccessFilter
    from superset.models.dashboard import Dashboard
    from superset.models.slice import Slice

    _limit(ChartFilter, Slice)
    _limit(DashboardAccessFilter, Dashboard)
