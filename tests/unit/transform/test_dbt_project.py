"""The dbt project parses, and every model is tested and documented."""

from __future__ import annotations

import pytest

from lakehouse.config import Settings, environment_variables
from lakehouse.transform.dbt import _release_log_files


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    from dbt.cli.main import dbtRunner

    project = Settings().transform.project_dir
    work = tmp_path_factory.mktemp("dbt")
    env = {
        "LAKEHOUSE_DBT_HOST": "127.0.0.1",
        "LAKEHOUSE_DBT_PORT": "1",
        "LAKEHOUSE_DBT_CATALOG": "lake",
        "LAKEHOUSE_DBT_PASSWORD": "unused-by-parse",
        "LAKEHOUSE_DBT_CERT": str(work / "ca.pem"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    with environment_variables(env):
        try:
            result = dbtRunner().invoke([
                "parse", "--project-dir", str(project), "--profiles-dir", str(project),
                "--target-path", str(work / "target"), "--log-path", str(work / "logs"),
                "--quiet",
            ])  # fmt: skip
        finally:
            _release_log_files()
    assert result.success, result.exception
    return result.result


def test_every_model_has_data_tests_and_a_description(manifest):
    models = {n.unique_id: n for n in manifest.nodes.values() if n.resource_type == "model"}
    tested = {
        dep
        for n in manifest.nodes.values()
        if n.resource_type == "test"
        for dep in n.depends_on.nodes
    }
    assert len(models) == 14
    assert sorted(m for m in models if m not in tested) == []
    assert sorted(m.name for m in models.values() if not m.description) == []


def test_aggregation_and_feature_logic_have_unit_tests(manifest):
    unit_tested = {u.model for u in manifest.unit_tests.values()}
    assert {"fct_device_hourly", "fct_site_daily", "device_health", "device_features",
            "anomaly_scores"} <= unit_tested  # fmt: skip


def test_layers_land_in_their_own_schemas(manifest):
    schemas = {n.name: n.schema for n in manifest.nodes.values() if n.resource_type == "model"}
    assert schemas["readings"] == "silver"
    assert schemas["fct_device_hourly"] == "gold"
    assert schemas["anomaly_scores"] == "platinum"
    # The pipeline's work tables, out of analysts' sight (lakehouse.trino_access).
    for work_table in ("readings_checked", "bronze_progress", "run_series", "hour_baselines"):
        assert schemas[work_table] == "internal"


def test_profile_takes_connection_details_from_the_environment():
    profile = (Settings().transform.project_dir / "profiles.yml").read_text()
    assert "env_var('LAKEHOUSE_DBT_HOST')" in profile
    assert "localhost" not in profile and "127.0.0.1" not in profile


def test_only_dimensions_and_seeds_are_reference_tables(manifest):
    tagged = {n.name for n in manifest.nodes.values() if "reference" in n.tags}
    assert tagged == {
        "dim_tenant", "dim_site", "dim_device", "metric_ranges", "metric_noise_floors",
        "unit_conversions",
    }  # fmt: skip


def test_every_incremental_model_records_the_run_that_wrote_a_row(manifest):
    """Run-scoped tests pick a run's rows by run_id (macros/test_scope.sql)."""
    incremental = [
        n
        for n in manifest.nodes.values()
        if n.resource_type == "model" and n.config.materialized == "incremental"
    ]
    assert len(incremental) == 9
    assert sorted(n.name for n in incremental if "run_id" not in n.columns) == []


def test_the_fingerprint_follows_the_project_not_its_build_output(tmp_path):
    import shutil

    from lakehouse.transform.dbt import project_fingerprint

    project = tmp_path / "dbt"
    shutil.copytree(
        Settings().transform.project_dir, project, ignore=shutil.ignore_patterns("target", "logs")
    )
    before = project_fingerprint(project)
    assert before == project_fingerprint(Settings().transform.project_dir)
    (project / "target").mkdir(exist_ok=True)
    (project / "target" / "manifest.json").write_text("{}")
    (project / "profiles.yml").write_text("# another machine's profile\n")
    assert project_fingerprint(project) == before
    seed = project / "seeds" / "metric_ranges.csv"
    seed.write_text(seed.read_text() + "\n")
    assert project_fingerprint(project) != before


def test_a_small_run_leaves_out_only_checks_that_hold_already(manifest):
    """Relationships silver already checks, and baselines' checks true by construction."""
    implied = sorted(n.name for n in manifest.nodes.values() if "implied" in n.tags)
    assert implied == [
        "lakehouse_expression_is_true_hour_baselines__baseline_readings_0_baseline_median_is_null_",
        "lakehouse_not_null_hour_baselines_device_id__metric__hour__baseline_readings",
        "relationships_anomaly_scores_device_id__device_id__ref_dim_device_",
        "relationships_device_features_device_id__device_id__ref_dim_device_",
        "relationships_device_health_device_id__device_id__ref_dim_device_",
        "relationships_fct_device_hourly_device_id__device_id__ref_dim_device_",
        "relationships_fct_site_daily_site__site__ref_dim_site_",
    ]


def test_a_kept_parse_serves_the_next_run_in_its_own_catalog(monkeypatch, tmp_path):
    """The transform loop parses once; each run gets a copy in its own catalog."""
    from lakehouse.transform import dbt

    project = Settings().transform.project_dir
    monkeypatch.setattr(dbt, "_parses", {})
    invoked: list[list[str]] = []
    real_invoke = dbt._invoke

    def counting_invoke(runner, args):
        invoked.append(args)
        return real_invoke(runner, args)

    monkeypatch.setattr(dbt, "_invoke", counting_invoke)
    parse = [
        "parse", "--project-dir", str(project), "--profiles-dir", str(project),
        "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs"),
        "--vars", '{"schema_prefix": "p_"}', "--quiet",
    ]  # fmt: skip
    key = (str(project), dbt.project_fingerprint(project), "lake", '{"schema_prefix": "p_"}')
    env = {
        "LAKEHOUSE_DBT_HOST": "127.0.0.1",
        "LAKEHOUSE_DBT_PORT": "1",
        "LAKEHOUSE_DBT_CATALOG": "run_a",
        "LAKEHOUSE_DBT_PASSWORD": "unused-by-parse",
        "LAKEHOUSE_DBT_CERT": str(tmp_path / "ca.pem"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    with environment_variables(env):
        first = dbt._parsed_manifest(key, parse, "run_a")
        second = dbt._parsed_manifest(key, parse, "run_b")
    assert len(invoked) == 1

    def relations(manifest):
        nodes = [*manifest.nodes.values(), *manifest.sources.values()]
        return {(n.database, n.relation_name) for n in nodes if n.relation_name}

    readings = second.nodes["model.lakehouse.readings"]
    assert (readings.database, readings.relation_name) == ("run_b", '"run_b"."p_silver"."readings"')
    # The registry's source lives in another catalog (pg) and stays there.
    assert {database for database, _ in relations(second)} == {"run_b", "pg"}
    assert {database for database, _ in relations(first)} == {"run_a", "pg"}
    assert {name.replace('"run_a"', "") for _, name in relations(first)} == {
        name.replace('"run_b"', "") for _, name in relations(second)
    }
    assert second.ref_lookup.find("readings", None, None, second).database == "run_b"
