"""The README is a landing page: short, and every link in it leads somewhere that exists
(the docs site checks its own links when make docs builds it with --strict)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)#]+)(?:#[^)]*)?\)")


def test_the_readme_is_short() -> None:
    """About 150 lines: what it is, the two commands, one call, where to go next."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 160


def test_every_local_link_in_the_readme_exists() -> None:
    """Each relative link names a file in the repository."""
    text = (ROOT / "README.md").read_text()
    local = [link for link in LINK.findall(text) if "://" not in link]
    assert local
    assert [link for link in local if not (ROOT / link).exists()] == []


def test_every_docs_page_is_in_the_site_navigation() -> None:
    """No page is built but unreachable: mkdocs.yml's nav lists each one."""
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {page.name for page in (ROOT / "docs").glob("*.md")}
    assert {page for page in pages if page not in nav} == set()


def test_the_configuration_reference_is_generated_from_the_declarations() -> None:
    """docs/configuration.md is what `hitl settings` prints: adding or changing a
    setting without regenerating the page fails here."""
    from hitl.cli import settings_page

    assert (ROOT / "docs" / "configuration.md").read_text() == settings_page(), (
        "regenerate: hitl settings > docs/configuration.md"
    )
