"""The serving schema's shape: every table keyed on tenant, under forced RLS, readable
only through the reader group."""

from __future__ import annotations

import pytest

from lakehouse.errors import InvalidNameError
from lakehouse.serving import roles
from lakehouse.serving.publish import schema_statements
from lakehouse.serving.tables import TABLES


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_every_table_has_a_tenant_and_its_key_among_its_columns(table):
    names = table.column_names
    assert names[0] == "tenant"
    assert set(table.key) <= set(names)
    assert "tenant text not null" in table.create_sql("serving")


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_every_table_forces_rls_and_is_granted_to_the_reader_group_only(table):
    statements = schema_statements("serving")
    name = f"serving.{table.name}"
    assert f"alter table {name} force row level security" in statements
    assert f"revoke all on {name} from public" in statements
    grants = [s for s in statements if s.startswith("grant") and f" on {name} " in s]
    assert grants == [f"grant select on {name} to {roles.READER_ROLE}"]
    policies = [s for s in statements if s.startswith("create policy") and f" on {name} " in s]
    assert [p.split()[2] for p in policies] == ["publisher", "tenant_rows", "all_tenants"]
    tenant_rows = f"to {roles.READER_ROLE} using (tenant = (select serving.current_tenant()))"
    assert tenant_rows in policies[1]


def test_the_tenant_lookup_follows_the_login_role():
    ddl = schema_statements("serving")[0]
    assert "where role_name = session_user" in ddl
    assert "security definer" in ddl


def test_tenant_roles_are_valid_identifiers_and_reject_bad_names():
    assert roles.tenant_role("acme") == "tenant_acme"
    assert len(roles.tenant_role("a" * 63)) <= 63
    assert roles.tenant_role("a" * 63) != roles.tenant_role("a" * 62 + "b")
    with pytest.raises(InvalidNameError):
        roles.tenant_role("acme'; drop role x; --")
