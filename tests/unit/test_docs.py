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
OLD_CITATION = re.compile(r"\breference (?:\u00a7|\d+\.\d)")  # the old spec: the word, then a section sign or N.N
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
    """The old specification is not in the repository; citations name docs/algorithm.md instead
    of its section numbers."""
    stale = []
    for path in _text_files():
        if path == ALGORITHM:
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OLD_CITATION.search(line):
                stale.append(f"{path.relative_to(ROOT)}:{lineno}")
    assert not stale, "citations of the old reference:\n" + "\n".join(stale)


README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAKEFILE = ROOT / "Makefile"
README_MAX_LINES = 150
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
MAKE_COMMAND = re.compile(r"`?\bmake ([a-z][\w-]*)")


def _markdown_pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#{1,6} (.+)$", page.read_text(encoding="utf-8"), re.MULTILINE)
    return {_slug(heading) for heading in headings}


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move details to docs/"


def test_readme_commands_are_makefile_targets() -> None:
    targets = set(re.findall(r"^([a-z][\w-]*):", MAKEFILE.read_text(encoding="utf-8"), re.MULTILINE))
    commands = set(MAKE_COMMAND.findall(README.read_text(encoding="utf-8")))
    assert {"run", "test"} <= commands, f"README.md must give `make run` and `make test`, found {sorted(commands)}"
    assert commands <= targets, f"README.md names make targets the Makefile lacks: {sorted(commands - targets)}"


def test_links_between_docs_resolve() -> None:
    broken = []
    for page in _markdown_pages():
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target):  # https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            resolved = (page.parent / path_part).resolve() if path_part else page
            where = f"{page.relative_to(ROOT)} -> {target}"
            if not resolved.exists():
                broken.append(f"{where}: no such file")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{where}: no heading with that anchor")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_index_lists_every_page() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    linked = {Path(target.partition("#")[0]).name for target in LINK.findall(index)}
    missing = [page.name for page in DOCS.glob("*.md") if page.name != "index.md" and page.name not in linked]
    assert not missing, f"docs/index.md does not list: {missing}"


def test_named_docs_pages_exist() -> None:
    """Code, tests and docs name docs pages by path (`docs/architecture.md`); each must exist."""
    named = re.compile(r"\bdocs/([\w-]+\.md)\b")
    missing = []
    for path in _text_files():
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            missing += [f"{path.relative_to(ROOT)}:{lineno}: docs/{name}" for name in named.findall(line)
                        if not (DOCS / name).is_file()]
            if "DESIGN.md" in line and path != Path(__file__).resolve():
                missing.append(f"{path.relative_to(ROOT)}:{lineno}: DESIGN.md (now docs/architecture.md)")
    assert not missing, "references to docs pages that do not exist:\n" + "\n".join(missing)
