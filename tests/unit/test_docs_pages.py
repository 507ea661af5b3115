"""The README and docs/ hold together: every relative link leads somewhere, the
runnable blocks are there to run, and the make targets they name are the Makefile's."""

from __future__ import annotations

import re

import pytest

from tests.docs_pages import README, ROOT, anchors, pages, relative_links, runnable_blocks


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_its_heading(page):
    broken = []
    for target in relative_links(page):
        path, _, fragment = target.partition("#")
        found = (page.parent / path).resolve() if path else page
        if not found.exists():
            broken.append(f"{target}: no such file")
        elif fragment and found.suffix == ".md" and fragment not in anchors(found):
            broken.append(f"{target}: no heading #{fragment} in {found.relative_to(ROOT)}")
    assert broken == []


def test_every_docs_page_is_linked_from_the_readme_or_another_page():
    linked = {
        (page.parent / target.partition("#")[0]).resolve()
        for page in pages()
        for target in relative_links(page)
    }
    assert [p.relative_to(ROOT) for p in pages() if p != README and p not in linked] == []


def test_there_are_runnable_blocks_of_both_kinds():
    kinds = [block.kind for block in runnable_blocks()]
    assert kinds.count("bash") >= 3 and kinds.count("python") >= 1
    assert any(block.page == README for block in runnable_blocks())


def test_the_readme_has_one_short_section_per_kind_of_user():
    text = README.read_text()
    sections = re.findall(r"^## (.+)$", text, re.MULTILINE)
    assert sections == ["Architecture", "Device owners", "Analysts", "Business users",
                        "Data engineers", "Platform teams"]  # fmt: skip
    assert "```mermaid" in text
    assert not re.search(r"^\*\*", text, re.MULTILINE)  # no paragraph opens in bold


def _help() -> dict[str, str]:
    """The Makefile's targets and their `## help` texts."""
    makefile = (ROOT / "Makefile").read_text()
    return dict(re.findall(r"^([a-z][a-z-]*):.*?## (.+)$", makefile, re.MULTILINE))


def test_every_make_target_the_pages_name_is_a_documented_one():
    help_texts = _help()
    named = {
        target
        for page in pages()
        for target in re.findall(r"(?:`|^)make ([a-z][a-z-]*)", page.read_text(), re.M)
    }
    assert named and sorted(named - help_texts.keys()) == []


def test_a_make_command_explained_in_a_block_says_what_make_help_says():
    """The comment is the target's help text, or the help text without its remark in
    parentheses (`make test   # set up everything and pass the tests`)."""
    help_texts = _help()
    for page in pages():
        for target, comment in re.findall(r"^make ([a-z-]+) +# (.+)$", page.read_text(), re.M):
            said, meant = comment.lower(), help_texts[target].lower()
            assert meant == said or meant.startswith(f"{said} ("), (page.name, target)
