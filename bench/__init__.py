"""Benchmarks, run with `make bench` (`python -m bench.<name>`).

Every benchmark runs against a stack of its own (home `.lakehouse-bench/`, ports from
22000 up), set up here before any settings are built, so a lakehouse started with
`make up` on the same machine is never touched. `python -m bench.down` stops it.
"""

from __future__ import annotations

from pathlib import Path

from lakehouse.config import isolate_process

BENCH_ENVIRONMENT = isolate_process(
    Path(__file__).resolve().parent.parent / ".lakehouse-bench", first_port=22_000
)
