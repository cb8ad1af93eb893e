"""The documentation holds together: every relative link and anchor in README.md,
CONTRIBUTING.md, CHANGELOG.md and docs/ resolves (on GitHub and in the mkdocs site
alike), `mkdocs build --strict` makes the site, the README stays a front page, and no
module of metafs/ grows past what one concern needs."""

from __future__ import annotations

import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from tests.support.servers import ROOT

PAGES = [
    ROOT / "README.md",
    ROOT / "CONTRIBUTING.md",
    ROOT / "CHANGELOG.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
#: what one module of metafs/ may hold (trio and httpx keep theirs a few hundred lines)
MAX_MODULE_LINES = 500


def github_slug(heading: str) -> str:
    text = re.sub(r"[`*_]", "", heading).strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -" or unicodedata.category(c) == "Mn")
    return text.replace(" ", "-")


def mkdocs_slug(heading: str) -> str:
    """Python-Markdown's toc slugify, as mkdocs uses it."""
    text = unicodedata.normalize("NFKD", re.sub(r"[`*]", "", heading)).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    """The anchors a link may name in ``page``: only those both renderers make alike."""
    text = FENCE.sub("", page.read_text())
    headings = [m.group(1) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M)]
    return {github_slug(h) for h in headings} & {mkdocs_slug(h) for h in headings}


def links(page: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", page.read_text()))


def broken_links(pages: list[Path]) -> tuple[list[str], int]:
    """Every relative link of ``pages`` whose file or anchor does not exist, and how many
    relative links were checked."""
    broken, checked = [], 0
    for page in pages:
        for target in links(page):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s), mailto: not ours to check offline
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            checked += 1
            if not dest.exists():
                broken.append(f"{page.name}: {target}: no such file")
            elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
                broken.append(f"{page.name}: {target}: no such anchor in {dest.name}")
    return broken, checked


@pytest.mark.timeout(60)
def test_every_relative_link_and_anchor_resolves() -> None:
    broken, checked = broken_links(PAGES)
    assert not broken, "\n".join(broken)
    assert checked > 40  # the pages do link to each other: a regex that found none proves nothing


def test_the_link_checker_finds_a_broken_anchor(tmp_path: Path) -> None:
    """The checker itself: a heading's slug, both renderers' rules, a missing anchor."""
    page = tmp_path / "p.md"
    page.write_text("# When the store is replaced: `X-Metafs-Store` and 410\n\n```sh\n# not a heading\n```\n")
    assert anchors(page) == {"when-the-store-is-replaced-x-metafs-store-and-410"}
    assert github_slug("a - b") == "a---b" and mkdocs_slug("a - b") == "a-b"  # never linkable
    other = tmp_path / "q.md"
    other.write_text(
        "[ok](p.md#when-the-store-is-replaced-x-metafs-store-and-410) [gone](p.md#nope)"
        " [missing](r.md) [web](https://example.net/x)\n```\n[fenced](r.md)\n```\n"
    )
    broken, checked = broken_links([other])
    assert broken == ["q.md: p.md#nope: no such anchor in p.md", "q.md: r.md: no such file"]
    assert checked == 3  # the fenced one and the web one are not checked


@pytest.mark.timeout(120)
def test_mkdocs_builds_the_site_strictly(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        assert f": {page.name}" in nav, f"docs/{page.name} is not in mkdocs.yml's nav"
        assert (tmp_path / ("index.html" if page.stem == "index" else f"{page.stem}/index.html")).exists()


def test_the_readme_is_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    first = "\n".join(lines[:15])
    assert "make demo" in first and "make test" in first


def test_no_module_passes_its_bound() -> None:
    big = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "metafs").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not big, f"modules over {MAX_MODULE_LINES} lines: {big}"
