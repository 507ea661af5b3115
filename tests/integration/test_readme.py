"""The README's blocks marked `<!-- runnable -->` run against the test stack, as a
reader would type them, so the README cannot drift from the product."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"<!-- runnable -->\n```(bash|python)\n(.*?)\n```", re.DOTALL)


def runnable_blocks() -> list[tuple[int, str, str]]:
    text = README.read_text()
    return [
        (text[: m.start()].count("\n") + 2, m.group(1), m.group(2)) for m in BLOCK.finditer(text)
    ]


def test_the_readme_has_runnable_blocks():
    kinds = [kind for _, kind, _ in runnable_blocks()]
    assert kinds.count("bash") >= 3 and kinds.count("python") >= 1


@pytest.mark.parametrize(("line", "kind", "code"), runnable_blocks(), ids=lambda v: str(v)[:30])
def test_a_runnable_readme_block_runs(stack, tmp_path, line, kind, code):
    # The reader's shell: the virtualenv's commands on PATH, the stack's settings.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    command = ["bash", "-euo", "pipefail", "-c", code] if kind == "bash" else [
        sys.executable, "-c", code
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, f"README.md line {line}:\n{code}\n{result.stderr[-3000:]}"
