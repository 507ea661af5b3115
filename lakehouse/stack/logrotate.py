"""Size-based log rotation that needs no help from the process writing the log.

Every process appends to its log (O_APPEND), so the file can be copied aside and
truncated in place (`copytruncate`): the writer's next line lands at the new end.
Lines written between the copy and the truncation are lost; with a check every few
seconds that is at most a few lines per rotation, which is the price of never
restarting a server to rotate its log.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def rotate_if_large(path: Path, max_bytes: int, backups: int) -> bool:
    """Rotate `path` to `path.1` … `path.<backups>` once it exceeds `max_bytes`."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if size <= max_bytes:
        return False
    for index in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{index + 1}"))
    first = path.with_name(f"{path.name}.1")
    with path.open("rb") as source, first.open("wb") as target:
        shutil.copyfileobj(source, target, length=1 << 20)
    os.truncate(path, 0)
    return True
