"""`python -m lakehouse.probe URL…`: exit 0 when every URL answers 2xx, else 1.

A container health check for the platform's image: the standard library only, so it
starts in a fraction of a second, and a plain argument list (no shell, no spaces in an
argument), which every container engine passes through unchanged.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 5.0


def healthy(url: str, timeout: float = TIMEOUT_SECONDS) -> bool:
    """Whether `url` answers a GET with a 2xx status within `timeout` seconds."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    urls = sys.argv[1:] if argv is None else argv
    if not urls:
        sys.stderr.write("usage: python -m lakehouse.probe URL [URL …]\n")
        return 2
    failed = [url for url in urls if not healthy(url)]
    for url in failed:
        sys.stderr.write(f"not healthy: {url}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
