"""The layer contract in pyproject.toml ([tool.importlinter]) holds, and an import that
points up fails it: what `make lint` runs (`lint-imports`) catches the change."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(ROOT / "pyproject.toml", tree)
    for package in ("lakehouse", "ingest", "testing/lakehouse_testing"):
        shutil.copytree(
            ROOT / package, tree / Path(package).name, ignore=shutil.ignore_patterns("*.pyc")
        )
    return tree


def test_the_tree_keeps_its_layers(tmp_path):
    result = _lint_imports(_copy(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_upward_import_breaks_the_layers(tmp_path):
    tree = _copy(tmp_path)
    process = tree / "lakehouse" / "stack" / "process.py"
    process.write_text(process.read_text() + "\nfrom lakehouse.transform import runner\n")
    result = _lint_imports(tree)
    assert result.returncode == 1
    assert "lakehouse.stack.process -> lakehouse.transform.runner" in result.stdout


def test_a_module_in_no_layer_breaks_the_contract(tmp_path):
    tree = _copy(tmp_path)
    (tree / "lakehouse" / "unplaced.py").write_text('"""Belongs to no layer yet."""\n')
    result = _lint_imports(tree)
    assert result.returncode == 1
    assert "lakehouse.unplaced" in result.stdout
