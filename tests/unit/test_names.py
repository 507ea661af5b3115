"""Names that reach URLs, paths or SQL are checked against strict patterns."""

from __future__ import annotations

import pytest

from lakehouse.errors import InvalidNameError
from lakehouse.names import checked
from lakehouse.transform.runner import branch_of, new_run_id


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("run id", "x/../dev"),
        ("run id", "20261202_143000_a1b2c3; drop"),
        ("branch", "x/../dev"),
        ("branch", "main/other"),
        ("branch", "a..b"),
        ("branch", ""),
        ("catalog", 'lake" cascade --'),
        ("catalog", "Transform"),
        ("namespace", "bronze.readings"),
        ("device id", "dev 1"),
        ("device id", "../etc/passwd"),
        ("device id", "x" * 129),
        ("tenant", "acme'; --"),
        ("site", "hq/2"),
    ],
)
def test_bad_names_are_refused_with_the_pattern(kind, value):
    with pytest.raises(InvalidNameError) as info:
        checked(kind, value)
    assert info.value.message == f"invalid {kind} {value!r}"
    assert "must match" in str(info.value.fix)


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("branch", "main"),
        ("branch", "transform_20261202_143000_a1b2c3"),
        ("branch", "release-1.2"),
        ("catalog", "transform_20261202_143000_a1b2c3"),
        ("device id", "pi-kitchen"),
        ("device id", "gw-a-1f2e:3"),
        ("tenant", "tenant-01"),
        ("site", "site.hq"),
    ],
)
def test_good_names_pass(kind, value):
    assert checked(kind, value) == value


def test_a_new_run_id_names_a_valid_branch_and_a_crafted_one_does_not():
    run_id = new_run_id()
    assert checked("branch", branch_of(run_id)) == f"transform_{run_id}"
    with pytest.raises(InvalidNameError):
        branch_of("x/../dev")


def test_transform_discard_refuses_a_crafted_run_id(tmp_path):
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "lakehouse", "transform", "discard", "x/../dev"],
        env={**os.environ, "LAKEHOUSE_HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "error: invalid run id 'x/../dev'" in result.stderr
    assert "Traceback" not in result.stderr
