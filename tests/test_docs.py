"""The README and docs/ stay usable: links resolve, the README stays short and keeps its three commands."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]  # docs/results/ included: it costs nothing
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def relative_links(page: Path) -> list[str]:
    """Targets of the page's Markdown links and images, outside code blocks, that point into the repo."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    targets = (m.group(1) for m in LINK.finditer(text))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t, re.I) and not t.startswith("#")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_to_a_file_in_the_repo(page):
    broken = []
    for target in relative_links(page):
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists() or ROOT not in (path, *path.parents):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to what is not in the repo: {broken}"


def test_the_link_finder_sees_links_and_images_and_skips_urls_anchors_and_code(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[a](docs/a.md) ![b](b.png \"title\") [c](https://x.org) [d](#top) [e](e.md#part)\n"
                    "```\n[f](not-a-link.md)\n```\n")
    assert relative_links(page) == ["docs/a.md", "b.png", "e.md#part"]


def test_the_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 210, f"README.md has {len(lines)} lines: move reference material into docs/"


@pytest.mark.parametrize("command", [
    "pip install -r requirements.txt",                   # set-up (what .ci/run runs first)
    "python run.py --mode train --defense pgn",          # the main job
    "python -m pytest -q",                               # the tests (what .ci/run runs next)
])
def test_the_readme_keeps_the_three_commands(command):
    assert command in README.read_text(encoding="utf-8")
