"""Named crash points for fault-injection tests.

`LAKEHOUSE_FAILPOINT=after-readings-commit:2` makes the process kill itself with
SIGKILL the second time it passes that point, exactly as `kill -9` from outside would,
but at a chosen instant. Unset (the default), a failpoint costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    spec = os.environ.get("LAKEHOUSE_FAILPOINT")
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
