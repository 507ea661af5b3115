"""`lakehouse users`: names that cannot collide, and access taken away and given back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from lakehouse.config import Settings
from lakehouse.errors import ConfigError, InvalidNameError
from lakehouse.names import checked, principal_key
from lakehouse.trino_users import (
    add_user,
    added_users,
    find_user,
    remove_user,
    reset_password,
    set_disabled,
)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home", cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(
    "name", ["ptx..g", "ptx.", ".ptx", "-x", "ptx-_g", "PTX", "a b", "a\\.b", "a*", "a|b", ""]
)
def test_impossible_names_are_refused_with_the_rule(settings, name):
    with pytest.raises(InvalidNameError) as info:
        add_user(settings, name, "analyst", None)
    assert "must match" in str(info.value.fix)


@given(st.text(alphabet=".+*|[(\\^$?{abc-_", min_size=1, max_size=10))
def test_an_accepted_name_holds_no_regex_syntax_but_single_separators(name):
    try:
        checked("principal", name)
    except InvalidNameError:
        return
    assert all(c.isalnum() or c in "._-" for c in name)
    assert principal_key(name).count("--") == 0


def test_a_name_that_differs_only_in_separators_is_refused(settings):
    add_user(settings, "ptx.g", "analyst", "acme")
    for other in ("ptx-g", "ptx_g"):
        with pytest.raises(ConfigError, match="only in its separators"):
            add_user(settings, other, "analyst", "globex")
    with pytest.raises(ConfigError, match="only in its separators"):
        add_user(settings, "lakehouse.transform", "analyst", None)
    add_user(settings, "ptx.g", "analyst", "acme")  # the same name again: a replacement
    assert [u.name for u in added_users(settings)] == ["ptx.g"]


def test_disable_enable_keep_the_user_and_its_password(settings):
    add_user(settings, "ana", "analyst", "acme")
    before = find_user(settings, "ana")
    set_disabled(settings, "ana", disabled=True)
    assert find_user(settings, "ana").disabled
    set_disabled(settings, "ana", disabled=False)
    assert find_user(settings, "ana") == before


def test_reset_replaces_only_the_password(settings):
    add_user(settings, "ana", "analyst", "acme")
    before = find_user(settings, "ana")
    password = reset_password(settings, "ana")
    after = find_user(settings, "ana")
    assert len(password) >= 20
    assert after.password_hash != before.password_hash
    assert (after.role, after.tenant, after.disabled) == ("analyst", "acme", False)


def test_remove_forgets_the_user_and_unknown_or_platform_names_are_refused(settings):
    add_user(settings, "ana", "analyst", None)
    add_user(settings, "bob", "engineer", None)
    remove_user(settings, "ana")
    assert [u.name for u in added_users(settings)] == ["bob"]
    with pytest.raises(ConfigError, match="no Trino user 'ana'"):
        remove_user(settings, "ana")
    with pytest.raises(ConfigError, match="platform's own"):
        set_disabled(settings, "superset", disabled=True)


def test_users_help_names_every_command():
    from lakehouse.cli import app

    result = CliRunner().invoke(app, ["users", "--help"])
    assert result.exit_code == 0
    for command in ("add", "list", "disable", "enable", "remove", "reset"):
        assert command in result.output
    assert "audit" in result.output and "5 seconds" in result.output
