"""Trino's access rules: every name matches exactly itself, as Trino's Java regexes
read it (a full match; Python's `re.fullmatch` reads `\\x` as Java does)."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from lakehouse.trino_access import DATA_TABLES, access_rules, write_files
from lakehouse.trino_patterns import NOTHING, any_of, exact, for_replacement
from lakehouse.trino_users import Principal

# Every character Java's regex syntax gives a meaning, plus a few plain ones.
METACHARACTERS = ".+*|[](){}\\^$?-,:=!<>&#/ "
NAMES = st.text(alphabet=st.sampled_from("ab1_" + METACHARACTERS), min_size=1, max_size=8)
NAME_SETS = st.lists(NAMES, min_size=1, max_size=8, unique=True)


def java_append_replacement(replacement: str, match: re.Match[str]) -> str:
    """What Java's `Matcher.appendReplacement` makes of `replacement` (Trino runs an
    impersonation rule's new_user through it): `\\x` is x, `$n` is group n."""
    out, i = [], 0
    while i < len(replacement):
        c = replacement[i]
        if c == "\\":
            out.append(replacement[i + 1])
            i += 2
        elif c == "$":
            j = i + 1
            while j < len(replacement) and replacement[j].isdigit():
                j += 1
            if j == i + 1:
                raise ValueError("illegal group reference")
            out.append(match.group(int(replacement[i + 1 : j])))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matched(pattern: str, names: list[str]) -> set[str]:
    return {name for name in names if re.fullmatch(pattern, name)}


@given(NAME_SETS)
def test_an_exact_pattern_matches_its_name_and_no_other(names):
    for name in names:
        assert matched(exact(name), names) == {name}


@given(NAME_SETS, st.data())
def test_an_alternation_matches_exactly_its_names(names, data):
    chosen = data.draw(st.lists(st.sampled_from(names), unique=True))
    assert matched(any_of(chosen), names) == set(chosen)


def test_nothing_matches_no_name_not_even_the_empty_one():
    assert any_of([]) == NOTHING
    assert matched(NOTHING, ["", "a", ".*"]) == set()


@given(NAME_SETS)
def test_a_pattern_survives_javas_replacement_unchanged(names):
    pattern = any_of(names)
    original = re.fullmatch("superset", "superset")
    assert java_append_replacement(for_replacement(pattern), original) == pattern


def _people(names: list[str], data) -> list[Principal]:
    people = []
    for name in names:
        kind = data.draw(st.sampled_from(["tenant", "analyst", "engineer", "disabled-tenant"]))
        people.append(
            Principal(
                name,
                "engineer" if kind == "engineer" else "analyst",
                "acme" if kind.endswith("tenant") else None,
                "$2y$10$hash",
                disabled=kind.startswith("disabled"),
            )
        )
    return people


@settings(max_examples=200)
@given(NAME_SETS, st.data())
def test_every_user_rule_names_exactly_the_users_it_was_written_for(names, data):
    people = _people(names, data)
    tenants = {p.name for p in people if p.tenant and not p.disabled}
    disabled = {p.name for p in people if p.disabled}
    rules = access_rules(people)

    for rule in rules["tables"]:
        if "user" not in rule:
            continue
        hits = matched(rule["user"], names)
        if "filter" in rule:  # one tenant analyst's own rows
            assert len(hits) == 1 and hits <= tenants
            assert rule["filter"] == "tenant = 'acme'"
        else:  # what every tenant analyst may read, or may not
            assert hits == tenants
    refusals = [r for r in rules["catalogs"] if "user" in r]
    assert {n for r in refusals for n in matched(r["user"], names)} == disabled
    assert all(r["allow"] == "none" for r in refusals)

    (impersonation,) = rules["impersonation"]
    original = re.fullmatch(impersonation["original_user"], "superset")
    assert original is not None
    assert matched(impersonation["original_user"], names) == set()  # only superset itself
    new_user = java_append_replacement(impersonation["new_user"], original)
    assert matched(new_user, names) == tenants


def test_names_that_differ_in_a_dot_get_their_own_tenants_rows():
    acme = Principal("ptx.g", "analyst", "acme", "$2y$10$a")
    globex = Principal("ptx-g", "analyst", "globex", "$2y$10$b")
    rules = access_rules([acme, globex])["tables"]
    first = {
        name: next(r for r in rules if "user" in r and re.fullmatch(r["user"], name))
        for name in ("ptx.g", "ptx-g")
    }
    assert first["ptx.g"]["filter"] == "tenant = 'acme'"
    assert first["ptx-g"]["filter"] == "tenant = 'globex'"


def test_a_tenants_name_is_an_sql_literal_in_its_filter():
    rules = access_rules([Principal("o", "analyst", "o'brien", "$2y$10$a")])["tables"]
    assert next(r for r in rules if "filter" in r)["filter"] == "tenant = 'o''brien'"


def _first(rules: list[dict], **subject: str) -> dict:
    """The first rule whose regex fields all fully match `subject` (Trino's order)."""
    for rule in rules:
        if all(re.fullmatch(rule.get(key, ".*"), value) for key, value in subject.items()):
            return rule
    raise AssertionError(f"no rule for {subject}")


def test_queries_engineers_see_and_kill_all_everyone_else_only_executes():
    queries = access_rules([])["queries"]
    assert set(_first(queries, group="engineer")["allow"]) == {"execute", "view", "kill"}
    for group in ("analyst", "superset", "transform", "ingest", "maintain"):
        rule = _first(queries, group=group)
        # Viewing and killing one's own queries is always allowed by Trino itself.
        assert rule["allow"] == ["execute"] and "queryOwner" not in rule


def test_kill_query_may_be_called_and_decides_by_the_query_rules():
    procedures = access_rules([])["procedures"]
    rule = _first(procedures, catalog="system", schema="runtime", procedure="kill_query")
    assert rule["privileges"] == ["EXECUTE"]
    # The catalogs' own procedures (lake.system.*) stay refused, as before.
    assert not any(re.fullmatch(r.get("catalog", ".*"), "lake") for r in procedures)


def test_system_information_is_for_engineers_only():
    engineer = Principal("eng.a", "engineer", None, "$2y$10$a")
    analyst = Principal("enga", "analyst", None, "$2y$10$a")
    (rule,) = access_rules([engineer, analyst])["system_information"]
    assert rule["allow"] == ["read"] and set(rule) == {"user", "allow"}  # no groups here
    assert re.fullmatch(rule["user"], "eng.a") and not re.fullmatch(rule["user"], "enga")
    (nobody,) = access_rules([])["system_information"]
    assert nobody["user"] == NOTHING


def test_a_tenant_analyst_reads_data_tables_not_metadata_tables_or_others_work():
    tenant = Principal("acme-a", "analyst", "acme", "$2y$10$a")
    tables = access_rules([tenant])["tables"]

    def privileges(catalog: str, schema: str, table: str) -> list[str]:
        rule = _first(tables, user="acme-a", group="analyst", catalog=catalog,
                      schema=schema, table=table)  # fmt: skip
        return rule["privileges"]

    assert privileges("lake", "silver", "readings") == ["SELECT"]
    for metadata in ("readings$files", "readings$partitions", "readings$snapshots"):
        assert re.fullmatch(DATA_TABLES, metadata) is None
        assert privileges("lake", "silver", metadata) == []
    assert privileges("system", "jdbc", "tables") == ["SELECT"]
    assert privileges("system", "runtime", "queries") == ["SELECT"]
    for table in ("tasks", "transactions", "optimizer_rule_stats"):
        assert privileges("system", "runtime", table) == []
    assert privileges("lake", "bronze", "readings") == []
    assert privileges("pg", "registry", "devices") == []


def test_the_internal_schema_is_for_engineers_and_the_platforms_principals_only():
    people = [
        Principal("acme-a", "analyst", "acme", "$2y$10$a"),
        Principal("ann", "analyst", None, "$2y$10$a"),
        Principal("eng", "engineer", None, "$2y$10$a"),
    ]
    rules = access_rules(people)

    def privileges(user: str, group: str, schema: str) -> list[str]:
        subject = {"user": user, "group": group, "catalog": "lake", "schema": schema,
                   "table": "bronze_progress"}  # fmt: skip
        return _first([*rules["tables"], {"privileges": []}], **subject)["privileges"]

    for user, group in (("acme-a", "analyst"), ("ann", "analyst"), ("superset", "superset")):
        assert privileges(user, group, "silver") == ["SELECT"]
        assert privileges(user, group, "internal") == []
    assert "OWNERSHIP" in privileges("eng", "engineer", "internal")
    for schema in ("internal", "t1_internal"):
        assert "INSERT" in privileges("lakehouse-transform", "transform", schema)
        owner = _first(rules["schemas"], group="transform", catalog="lake", schema=schema)
        assert owner["owner"] is True
    assert "SELECT" in privileges("lakehouse-maintain", "maintain", "internal")
    assert privileges("lakehouse-ingest", "ingest", "internal") == []


def test_a_disabled_user_can_neither_log_in_nor_be_in_a_group(tmp_path):
    people = [
        Principal("on", "analyst", None, "$2y$10$on"),
        Principal("off", "analyst", "acme", "$2y$10$off", disabled=True),
    ]
    write_files(tmp_path, people)
    assert (tmp_path / "password.db").read_text() == "on:$2y$10$on\n"
    assert (tmp_path / "group.txt").read_text() == "analyst:on\n"
    rules = json.loads((tmp_path / "rules.json").read_text())
    assert rules["catalogs"][0] == {"user": "off", "allow": "none"}
    assert rules["impersonation"][0]["new_user"] == NOTHING
