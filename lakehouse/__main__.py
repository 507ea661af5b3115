"""`python -m lakehouse` runs the CLI."""

from __future__ import annotations

from lakehouse.cli import main

main()
