"""Every relative link in README.md and docs/*.md leads to a file of the repository (and, with
a `#fragment`, to a heading of it): one test per link, so a broken one is named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = _FENCE.sub("", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.MULTILINE)}


def relative_links() -> list[tuple[str, str]]:
    """(page, link) for each relative link outside code blocks."""
    found = []
    for page in PAGES:
        text = _FENCE.sub("", page.read_text())
        for target in _LINK.findall(text):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, mailto:, ...
                found.append((str(page.relative_to(ROOT)), target))
    return found


def _params() -> list[object]:
    return [pytest.param(page, target, id=f"{page}->{target}") for page, target in relative_links()]


def test_pages_have_links() -> None:
    """The check below cannot pass by finding nothing: the README maps every page in docs/."""
    linked = {t.split("#")[0] for p, t in relative_links() if p == "README.md"}
    assert {f"docs/{p.name}" for p in PAGES[1:]} <= linked


@pytest.mark.parametrize(("page", "target"), _params())
def test_link_resolves(page: str, target: str) -> None:
    path, _, fragment = target.partition("#")
    resolved = ((ROOT / page).parent / path).resolve() if path else ROOT / page
    assert resolved.is_relative_to(ROOT), f"{target} leaves the repository"
    assert resolved.is_file(), f"{page}: {target} does not exist"
    if fragment:
        assert fragment in anchors(resolved), f"{page}: no heading #{fragment} in {path or page}"


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("What does not work yet", "what-does-not-work-yet"),
        ("`namespace`", "namespace"),
        ("Function URLs and HTTP routes", "function-urls-and-http-routes"),
        ("Sandboxes, layers & more", "sandboxes-layers--more"),
    ],
)
def test_slug(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor
