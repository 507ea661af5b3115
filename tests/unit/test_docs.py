"""The analysts' table reference: every model described, every column explained."""

from __future__ import annotations

from lakehouse.config import Settings
from lakehouse.docs import REFERENCE, descriptions, render


def test_every_model_of_the_layers_has_a_description():
    described = descriptions(Settings().transform.project_dir)
    assert len(described) == 10
    assert sorted(name for name, (text, _) in described.items() if not text) == []


def test_the_reference_explains_every_column_it_lists():
    text = REFERENCE.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) > 100
    assert [row for row in rows if row.endswith("|  |")] == []


def test_a_column_the_model_describes_keeps_its_own_words():
    described = descriptions(Settings().transform.project_dir)
    columns = {"silver.readings": [("run_id", "varchar"), ("seq", "bigint")]}
    text = render(columns, described)
    assert "| `run_id` | varchar | The transform run that published the row. |" in text
    assert "(device_id, seq) identifies a reading" in text


def test_the_pipelines_work_tables_are_not_in_the_analysts_reference():
    described = descriptions(Settings().transform.project_dir)
    text = REFERENCE.read_text()
    for table in ("readings_checked", "bronze_progress", "run_series", "hour_baselines"):
        assert not [name for name in described if name.endswith(f".{table}")]
        assert f".{table}`" not in text
