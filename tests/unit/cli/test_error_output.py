from __future__ import annotations

import subprocess
import sys


def test_an_error_and_its_fix_are_printed_as_they_are_written():
    """Brackets in a message are text, not console markup: a name pattern such as
    `^[a-z](?:[a-z0-9]|[._-]…` reaches the user whole."""
    result = subprocess.run(
        [sys.executable, "-m", "lakehouse", "users", "add", "ab+c", "--role", "analyst",
         "--tenant", "t1"],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "LAKEHOUSE_HOME": "/nonexistent"},
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "error: invalid principal 'ab+c'"
    assert lines[1] == "fix: a principal must match ^[a-z](?:[a-z0-9]|[._-](?=[a-z0-9])){0,62}$"
