"""The README and the pages under docs/: their runnable blocks and their links.

A block is runnable when the line before its opening fence is `<!-- runnable -->`;
tests/integration/test_readme.py runs each against the test stack, as a reader would
type it, and tests/unit/test_docs_pages.py checks every relative link.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"<!-- runnable -->\n```(bash|python)\n(.*?)\n```", re.DOTALL)
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
# [text](target) and ![alt](target); a target ends at whitespace or the closing paren.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.MULTILINE)


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    kind: str  # "bash" or "python"
    code: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    """The README and every page under docs/."""
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def runnable_blocks() -> list[Block]:
    blocks = []
    for page in pages():
        text = page.read_text()
        for m in BLOCK.finditer(text):
            line = text[: m.start()].count("\n") + 2
            blocks.append(Block(page, line, m.group(1), m.group(2)))
    return blocks


def relative_links(page: Path) -> list[str]:
    """Every link target of `page` outside code blocks that is neither a URL nor an
    e-mail address: a path relative to the page, optionally with a #fragment."""
    text = FENCE.sub("", page.read_text())
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def anchors(page: Path) -> set[str]:
    """The fragments GitHub gives the headings of a Markdown page."""
    text = FENCE.sub("", page.read_text())
    return {_slug(heading) for heading in HEADING.findall(text)}


def _slug(heading: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")
