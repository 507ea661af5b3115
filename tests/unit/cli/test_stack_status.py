"""`lakehouse stack status` reads whole at 80 columns; --wide adds the wide columns."""

from __future__ import annotations

import io
import re

from rich.console import Console

from lakehouse.cli.stack import status_table
from lakehouse.config import Settings
from lakehouse.stack.manager import Stack
from lakehouse.stack.service import ServiceStatus


def _statuses(tmp_path) -> list[ServiceStatus]:
    names = Stack(Settings(home=tmp_path / "home"), Console(quiet=True)).names()
    names += [n for n in ("transform", "maintain", "demo", "consumer-12") if n not in names]
    widest = {
        "pid": 4_194_304, "port": 65535, "state": "unsupervised", "restarts": 1000,
        "uptime_seconds": 999 * 3600.0 + 3599,
        "last_exit": "killed by SIGKILL (signal 9) after 2 h",
    }  # fmt: skip
    return [
        ServiceStatus(
            name=name, url=f"https://127.0.0.1:65535/{name}", healthy=i % 2 == 0, **widest
        )
        for i, name in enumerate(names)
    ]


def _render(statuses: list[ServiceStatus], *, wide: bool = False, width: int = 80) -> list[str]:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(status_table(statuses, wide=wide))
    return console.export_text().splitlines()


def test_no_line_exceeds_80_columns_and_names_and_heads_are_whole(tmp_path):
    statuses = _statuses(tmp_path)
    lines = _render(statuses)
    assert max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    assert "…" not in text
    cells = {cell.strip() for line in lines for cell in re.split("[│┃]", line)}
    assert {s.name for s in statuses} <= cells
    assert {"service", "state", "pid", "port", "uptime", "restarts", "health"} <= cells
    assert "url" not in cells and "last exit" not in cells


def test_wide_adds_the_url_and_last_exit(tmp_path):
    statuses = _statuses(tmp_path)[:2]
    text = "\n".join(_render(statuses, wide=True, width=200))
    assert "url" in text and "last exit" in text
    assert statuses[0].url in text and "killed by SIGKILL" in text
