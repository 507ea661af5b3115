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
    assert len(models) == 13
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


def test_profile_takes_connection_details_from_the_environment():
    profile = (Settings().transform.project_dir / "profiles.yml").read_text()
    assert "env_var('LAKEHOUSE_DBT_HOST')" in profile
    assert "localhost" not in profile and "127.0.0.1" not in profile
