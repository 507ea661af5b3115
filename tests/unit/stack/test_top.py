from __future__ import annotations

from lakehouse.stack.top import _failed_runs, parse

RUNS = """# TYPE lakehouse_transform_runs_total counter
lakehouse_transform_runs_total{outcome="published"} 7.0
lakehouse_transform_runs_total{outcome="failed"} 1.0
lakehouse_transform_runs_total{outcome="error"} 2.0
lakehouse_transform_runs_total{outcome="interrupted"} 3.0
"""


def test_runs_that_did_not_publish_include_interrupted_ones():
    assert _failed_runs(parse(RUNS)) == 6.0


def test_no_run_metrics_show_no_figure():
    assert _failed_runs(parse("")) is None
