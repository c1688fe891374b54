"""The README and docs/: the two commands first, every page reachable, every local link and anchor alive."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import ROOT

LINK = re.compile(r"\]\(([^)\s]+)\)")


def pages() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", page.read_text(), flags=re.S), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def local_links(page: Path) -> list[tuple[Path, str]]:
    found = []
    for target in LINK.findall(page.read_text()):
        if not target.startswith(("http://", "https://")):
            path, _, anchor = target.partition("#")
            found.append(((page.parent / path).resolve() if path else page, anchor))
    return found


def test_the_readme_starts_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text().split("\n## ")[0]
    assert "make demo" in head and "make test" in head


def test_the_readme_links_every_docs_page_and_the_changelog() -> None:
    linked = {path for path, _ in local_links(ROOT / "README.md")}
    assert set(pages()[1:]) <= linked


def test_every_local_link_in_the_docs_points_at_a_file_and_heading_that_exist() -> None:
    broken = [(page.name, str(path), anchor) for page in pages() for path, anchor in local_links(page)
              if not path.exists() or anchor and path.suffix == ".md" and anchor not in anchors(path)]
    assert broken == []
