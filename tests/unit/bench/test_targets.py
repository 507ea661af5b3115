"""bench.targets, run in a process of its own: importing `bench` points the importing
process at the benchmarks' stack, which this test session must not be."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def run_checks(*checks: tuple[str, bool, str]) -> subprocess.CompletedProcess[str]:
    script = "\n".join(
        ["from bench.targets import Targets", "targets = Targets()"]
        + [f"targets.check({name!r}, {ok!r}, {detail!r})" for name, ok, detail in checks]
        + ["targets.exit()", "print('after exit')"]
    )
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_every_target_met_prints_pass_lines_and_exits_zero():
    result = run_checks(("p95 ≤ 10 s", True, "3.2 s"), ("ratio ≥ 0.5", True, ""))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "PASS  p95 ≤ 10 s: 3.2 s",
        "PASS  ratio ≥ 0.5",
        "all 2 targets passed",
        "after exit",
    ]


def test_a_failed_target_exits_one_naming_every_failed_target():
    result = run_checks(
        ("p95 ≤ 10 s", False, "never: 200 of 200 readings not seen"),
        ("ratio ≥ 0.5", True, "0.71"),
        ("commit ratio ≤ 1.5", False, "1.80"),
    )
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "FAIL  p95 ≤ 10 s: never: 200 of 200 readings not seen",
        "PASS  ratio ≥ 0.5: 0.71",
        "FAIL  commit ratio ≤ 1.5: 1.80",
    ]
    assert result.stderr.strip() == "2 of 3 targets failed: p95 ≤ 10 s; commit ratio ≤ 1.5"


def test_no_target_checked_is_no_failure():
    result = run_checks()
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["all 0 targets passed", "after exit"]
