"""The blocks marked `<!-- runnable -->` in the README and in docs/ run against the test
stack, as a reader would type them, so the documentation cannot drift from the product
(tests/docs_pages.py finds them; tests/unit/test_docs_pages.py checks the links)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs_pages import Block, runnable_blocks

pytestmark = pytest.mark.integration


def test_the_readme_and_docs_have_runnable_blocks():
    kinds = [block.kind for block in runnable_blocks()]
    assert kinds.count("bash") >= 3 and kinds.count("python") >= 1


@pytest.mark.parametrize("block", runnable_blocks(), ids=str)
def test_a_runnable_block_runs(stack, tmp_path, block: Block):
    # The reader's shell: the virtualenv's commands on PATH, the stack's settings.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    command = ["bash", "-euo", "pipefail", "-c", block.code] if block.kind == "bash" else [
        sys.executable, "-c", block.code
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, f"{block}:\n{block.code}\n{result.stderr[-3000:]}"
