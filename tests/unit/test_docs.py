"""The README stays short, and every relative link in it and in docs/ leads somewhere."""

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt
from testkit import REPO

MARKDOWN = MarkdownIt("commonmark").enable("table")
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def tokens(path: Path):
    """Every token of a page, inline children included."""
    for token in MARKDOWN.parse(path.read_text()):
        yield token
        yield from token.children or ()


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to '-'."""
    found, seen = set(), {}
    stream = MARKDOWN.parse(path.read_text())
    for opening, inline in zip(stream, stream[1:], strict=False):
        if opening.type != "heading_open":
            continue
        text = "".join(child.content for child in inline.children if child.type in ("text", "code_inline"))
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        # A repeated heading gets -1, -2, ... as on GitHub.
        found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return found


def relative_links(path: Path) -> list[str]:
    links = [token.attrGet("href") or token.attrGet("src") for token in tokens(path)
             if token.type in ("link_open", "image")]
    return [link for link in links if link and not urlsplit(link).scheme]


def test_the_readme_is_short():
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= 300, f"README.md has {lines} lines; move the detail to docs/<topic>.md"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_relative_links_lead_to_a_file_and_heading(page):
    broken = []
    for link in relative_links(page):
        target, anchor = urlsplit(link).path, urlsplit(link).fragment
        path = (page.parent / unquote(target)).resolve() if target else page
        if not path.exists():
            broken.append(f"{link}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{link}: no heading with that anchor in {path.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_every_page_of_docs_is_linked_from_the_readme():
    linked = {(REPO / urlsplit(link).path).resolve() for link in relative_links(REPO / "README.md")}
    assert not [page.name for page in PAGES[1:] if page.resolve() not in linked]


def test_the_anchor_rule_follows_github():
    page = REPO / "docs" / "runtime.md"
    assert "what-runs-inside-every-image-python-mainpy" in anchors(page)
