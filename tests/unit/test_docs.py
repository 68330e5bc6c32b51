"""The docs stay reachable from the code: every "§N" the repository cites is a numbered heading of
docs/algorithm.md, so a reader who follows a citation lands on a section that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALGORITHM = ROOT / "docs" / "algorithm.md"
SCANNED = ("azr", "flows", "tasks", "tests", "benchmarks", "infra", "scripts", "docs")
TOP_FILES = ("README.md", "Makefile", "pyproject.toml", "prefect.yaml")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".txt", ".cfg"}
CITATION = re.compile(r"§(\d+(?:\.\d+)*)")
OLD_CITATION = "reference " + "\u00a7"  # spelled apart so this file does not match itself
HEADING = re.compile(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", re.MULTILINE)


def _text_files() -> list[Path]:
    files = [ROOT / name for name in TOP_FILES if (ROOT / name).is_file()]
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts:
                files.append(path)
    return files


def _heading_numbers() -> set[str]:
    return set(HEADING.findall(ALGORITHM.read_text(encoding="utf-8")))


def test_algorithm_headings_are_numbered_in_order() -> None:
    numbers = HEADING.findall(ALGORITHM.read_text(encoding="utf-8"))
    assert numbers, "docs/algorithm.md has no numbered headings"
    sections = [n for n in numbers if "." not in n]
    assert sections == [str(i) for i in range(1, len(sections) + 1)], sections
    for number in numbers:
        if "." in number:
            assert number.rsplit(".", 1)[0] in sections, f"§{number} has no parent section"
    assert len(numbers) == len(set(numbers)), "a heading number is used twice"


def test_every_cited_section_exists() -> None:
    headings = _heading_numbers()
    missing = []
    for path in _text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            for number in CITATION.findall(line):
                if number not in headings:
                    missing.append(f"{path.relative_to(ROOT)}:{lineno}: §{number}")
    assert not missing, "citations of sections docs/algorithm.md does not have:\n" + "\n".join(missing)


def test_citations_name_the_document() -> None:
    """The old specification is not in the repository; citations name docs/algorithm.md."""
    stale = []
    for path in _text_files():
        if path == ALGORITHM:
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OLD_CITATION in line:
                stale.append(f"{path.relative_to(ROOT)}:{lineno}")
    assert not stale, "citations of the old reference:\n" + "\n".join(stale)
