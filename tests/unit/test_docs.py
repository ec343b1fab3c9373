"""The repository stands alone: its docs are its own, and every citation and link resolves.

* No file refers to documents that are not in the repository (a design brief or style guide
  kept next to it, ``../shared/...``): the design and contracts are ``docs/architecture.md``,
  the conventions ``CONTRIBUTING.md``.
* Every ``architecture §N`` cited in code, tests and docs is a section of docs/architecture.md.
* Every relative link in the Markdown documents points to a file that exists.
"""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache"}
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".cfg", ".txt", ".json", ".proto", ""}
FOREIGN = re.compile(r"DESIGN\.md|STYLE\.md|\.\./shared|\bDESIGN §|\bSTYLE \d")
CITATION = re.compile(r"architecture(?:\.md)? §(\d+)")


def _files() -> list[pathlib.Path]:
    found = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path.is_file() and path.suffix in TEXT_SUFFIXES and path.stat().st_size < 2_000_000:
            found.append(path)
    return found


FILES = _files()


def _text(path: pathlib.Path) -> str:
    return path.read_text("utf-8", "replace")


def test_the_docs_exist() -> None:
    assert (ROOT / "docs" / "architecture.md").is_file()
    assert (ROOT / "CONTRIBUTING.md").is_file()


def test_nothing_refers_to_documents_outside_the_repository() -> None:
    offenders = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in FILES
        if p.name != "test_docs.py"
        for n, line in enumerate(_text(p).splitlines(), 1)
        if FOREIGN.search(line)
    ]
    assert offenders == []


def test_every_cited_section_exists() -> None:
    architecture = _text(ROOT / "docs" / "architecture.md")
    sections = set(re.findall(r"^## (\d+)\. ", architecture, re.M))
    assert sections >= {"1", "2", "3", "4", "5", "6", "7", "8"}
    cited = {(str(p.relative_to(ROOT)), n) for p in FILES for n in CITATION.findall(_text(p))}
    assert cited, "nothing cites docs/architecture.md"
    assert {(f, n) for f, n in cited if n not in sections} == set()


@pytest.mark.parametrize(
    "doc",
    sorted(str(p.relative_to(ROOT)) for p in FILES if p.suffix == ".md" and "tests" not in p.parts),
)
def test_relative_links_resolve(doc: str) -> None:
    path = ROOT / doc
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", _text(path))
    missing = [
        link
        for link in links
        if "://" not in link
        and not link.startswith("mailto:")
        and not (path.parent / link).exists()
    ]
    assert missing == []
