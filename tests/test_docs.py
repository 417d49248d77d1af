"""The documentation holds together: a short README, code citations that resolve, links that point somewhere.

Fast and offline: it only reads files of the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
METHODS = DOCS / "methods.md"
CODE_DIRS = ("src", "tests", "benchmarks", "flows")
README_MAX_LINES = 160

HEADING = re.compile(r"^#{1,6}\s+(\S+)")
# `§3.7`, `§1.4/§1.9`, `§3.5-3.7` (a range within one section), `§1`; U-items follow a `methods.md` mention.
SECTION = re.compile(r"§\s*(\d+(?:\.\d+)*)(?:\s*[-–]\s*(\d+(?:\.\d+)*))?")
UNCERTAINTY = re.compile(r"\bU\d+\b")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _code_files() -> list[Path]:
    files = [path for name in CODE_DIRS for path in sorted((ROOT / name).rglob("*.py"))]
    return [path for path in files if ".venv" not in path.parts and "site-packages" not in path.parts]


def _heading_ids() -> set[str]:
    """The first word of every heading of docs/methods.md, without a trailing dot: `1`, `3.7`, `U6`."""
    ids = set()
    for line in FENCE.sub("", METHODS.read_text(encoding="utf-8")).splitlines():
        match = HEADING.match(line)
        if match:
            ids.add(match.group(1).rstrip(".:"))
    return ids


def _expand(first: str, last: str | None) -> list[str]:
    """`3.5`-`3.7` -> 3.5, 3.6, 3.7; anything that is not a range inside one section stays its two ends."""
    if last is None:
        return [first]
    a, b = first.split("."), last.split(".")
    if len(a) == len(b) == 2 and a[0] == b[0] and int(a[1]) <= int(b[1]):
        return [f"{a[0]}.{minor}" for minor in range(int(a[1]), int(b[1]) + 1)]
    return [first, last]


def _citations() -> list[tuple[str, int, str]]:
    """(file, line, id) for every citation of methods.md in the code.

    Every `§` in the code cites docs/methods.md (it is the only numbered document), so all of them are taken;
    a `U<n>` counts only after a `methods.md` on the same line.
    """
    found = []
    for path in _code_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel == "tests/test_docs.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for match in SECTION.finditer(line):
                found += [(rel, number, f"§{section}") for section in _expand(match.group(1), match.group(2))]
            at = line.find("methods.md")
            if at >= 0:
                found += [(rel, number, item) for item in UNCERTAINTY.findall(line[at:])]
    return found


def _markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def test_readme_is_a_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move the depth into docs/"
    )


def test_methods_page_exists():
    assert METHODS.is_file(), "docs/methods.md is missing: the code cites it"


def test_the_code_cites_methods_md():
    # Guards the next test against passing vacuously (a changed citation style would find nothing).
    assert len(_citations()) >= 20, "found almost no `methods.md §` citations in the code: has the style changed?"


def test_every_methods_citation_resolves_to_a_heading():
    headings = _heading_ids()
    missing = [
        f"{file}:{line}: {item} (no heading starting with {item.lstrip('§')!r} in docs/methods.md)"
        for file, line, item in _citations()
        if item.lstrip("§") not in headings
    ]
    assert not missing, "citations of docs/methods.md that resolve to no heading:\n" + "\n".join(missing)


@pytest.mark.parametrize("page", _markdown_files(), ids=lambda path: path.relative_to(ROOT).as_posix())
def test_relative_links_point_to_existing_files(page: Path):
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # a URL (http:, mailto:, ...) or an anchor on the same page
        path = target.split("#", 1)[0].split("?", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    rel = page.relative_to(ROOT).as_posix()
    assert not broken, f"{rel}: links to missing files: " + ", ".join(broken)
