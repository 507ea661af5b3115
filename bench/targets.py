"""The targets of one benchmark run: a PASS or FAIL line each, and the exit status.

A benchmark prints its figures as it always did, checks each target with
`Targets.check`, and ends with `Targets.exit()`: status 1, naming the failed targets,
when any failed, so `make bench` and CI see a missed target instead of a line to read.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Result:
    """One target as checked: its statement, whether it was met, the figure measured."""

    name: str
    ok: bool
    detail: str


@dataclass
class Targets:
    """The targets one benchmark run checked, in order."""

    results: list[Result] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        """Record target `name` (e.g. "p95 ≤ 10 s") and print its PASS or FAIL line.

        Args:
            name: The target as a statement.
            ok: Whether this run met it.
            detail: The figure it was judged on, or why it was not met.

        Returns:
            `ok`, so a caller may branch on it.
        """
        self.results.append(Result(name, ok, detail))
        line = f"{'PASS' if ok else 'FAIL'}  {name}"
        print(f"{line}: {detail}" if detail else line, flush=True)
        return ok

    @property
    def failed(self) -> list[Result]:
        return [result for result in self.results if not result.ok]

    def exit(self) -> None:
        """Exit with status 1 and the failed targets when any failed; return otherwise."""
        if failed := self.failed:
            sys.exit(
                f"{len(failed)} of {len(self.results)} targets failed: "
                + "; ".join(result.name for result in failed)
            )
        print(f"all {len(self.results)} targets passed", flush=True)
