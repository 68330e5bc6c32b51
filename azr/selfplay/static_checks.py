"""Checks on a proposal's source that need no execution: banned imports, the call of `f` on
its input, and the `input()` guard (docs/algorithm.md §5.1, §5.3, §5.4).

The original matched banned entries against single module-path components, so its dotted
entries (`os.path`, `sys.exit`, `os.environ`, `os.sys`) never matched anything. Here a dotted
entry bans importing that path (`import os.path`, `from os import path`, `from os.path import
join`) and using it through an imported module (`import os; os.path.join`), and a plain entry
bans the module in any position of an import path, as the original did. String-literal dynamic
imports (`__import__('random')`, `importlib.import_module('random')`) are caught too.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from collections.abc import Iterable

# What `ast.parse` of untrusted text can raise: bad syntax, NUL bytes, nesting too deep, size.
AST_ERRORS = (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError)


@dataclass(frozen=True)
class BannedUse:
    entry: str  # the banned-list entry that matched
    where: str  # what in the code matched it, e.g. "from os import path"


def _split_entries(banned: Iterable[str]) -> tuple[set[str], set[tuple[str, ...]]]:
    plain, dotted = set(), set()
    for entry in banned:
        entry = entry.strip()
        if not entry:
            continue
        if "." in entry:
            dotted.add(tuple(entry.split(".")))
        else:
            plain.add(entry)
    return plain, dotted


def _starts_with(path: tuple[str, ...], prefix: tuple[str, ...]) -> bool:
    return len(path) >= len(prefix) and path[: len(prefix)] == prefix


def _attribute_path(node: ast.AST) -> tuple[str, ...] | None:
    """`a.b.c` -> ('a', 'b', 'c'); None for anything that is not a plain dotted name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return tuple(reversed(parts))
    return None


def _dynamic_import_target(node: ast.Call) -> str | None:
    """The module named by `__import__('m')` or `importlib.import_module('m')`."""
    func = node.func
    is_dynamic = (isinstance(func, ast.Name) and func.id == "__import__") or (
        isinstance(func, ast.Attribute) and func.attr == "import_module"
    )
    if is_dynamic and node.args and isinstance(node.args[0], ast.Constant):
        value = node.args[0].value
        return value if isinstance(value, str) else None
    return None


def find_banned_imports(code: str, banned: Iterable[str]) -> list[BannedUse]:
    """Every use of a banned module or attribute path; empty when the code is clean.

    Code that does not parse falls back to a whole-word search of the raw text (as the
    original), so a broken program cannot hide an import.
    """
    banned = list(banned)
    plain, dotted = _split_entries(banned)
    try:
        tree = ast.parse(code)
    except AST_ERRORS:
        return [
            BannedUse(entry, "raw text")
            for entry in dict.fromkeys(banned)
            if entry.strip() and re.search(rf"(?<![\w.]){re.escape(entry.strip())}(?![\w])", code)
        ]

    found: list[BannedUse] = []
    aliases: dict[str, tuple[str, ...]] = {}  # local name -> the module path it is bound to

    def check_path(path: tuple[str, ...], where: str) -> None:
        for entry in sorted(plain):
            if entry in path:
                found.append(BannedUse(entry, where))
        for entry in sorted(dotted):
            if _starts_with(path, entry):
                found.append(BannedUse(".".join(entry), where))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                path = tuple(alias.name.split("."))
                check_path(path, f"import {alias.name}")
                if alias.asname:
                    aliases[alias.asname] = path
                else:
                    aliases[path[0]] = path[:1]
        elif isinstance(node, ast.ImportFrom):
            module = tuple(node.module.split(".")) if node.module else ()
            for alias in node.names:
                full = module + tuple(alias.name.split("."))
                check_path(full, f"from {node.module or '.'} import {alias.name}")
                aliases[alias.asname or alias.name] = full
        elif isinstance(node, ast.Call):
            target = _dynamic_import_target(node)
            if target:
                check_path(tuple(target.split(".")), f"dynamic import of {target!r}")

    # Attribute use of banned dotted paths through an imported module: `os.environ[...]`.
    if dotted:
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                path = _attribute_path(node)
                if path and path[0] in aliases:
                    resolved = aliases[path[0]] + path[1:]
                    for entry in sorted(dotted):
                        if _starts_with(resolved, entry):
                            found.append(BannedUse(".".join(entry), ".".join(path)))
    return _unique(found)


def _unique(uses: list[BannedUse]) -> list[BannedUse]:
    """One report per banned entry: the first place it was used."""
    first: dict[str, BannedUse] = {}
    for use in uses:
        first.setdefault(use.entry, use)
    return list(first.values())


def program_syntax_error(code: str) -> str | None:
    """Why the program does not parse, or None."""
    try:
        ast.parse(code)
    except AST_ERRORS as exc:
        return f"program: {type(exc).__name__}: {exc}"
    return None


def argument_syntax_error(input_text: str) -> str | None:
    """Why `f(<input>)` is not a single call of `f`, or None.

    The input must be argument text only: `1) or (True` parses as an expression but is not a
    single call of `f`, so it is refused here rather than spliced into source.
    """
    try:
        call = ast.parse(f"f({input_text})", mode="eval").body
    except AST_ERRORS as exc:
        return f"input {input_text[:80]!r}: {type(exc).__name__}: {exc}"
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "f"):
        return f"input {input_text[:80]!r} is not an argument list of f"
    return None


def calls_input_builtin(*sources: str) -> bool:
    """True if any source calls `input(...)`: a program that waits on stdin is never valid.

    The original used a text regex that also caught `parse_input(`; this looks at call nodes.
    """
    for source in sources:
        try:
            tree = ast.parse(source)
        except AST_ERRORS:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "input":
                return True
    return False
