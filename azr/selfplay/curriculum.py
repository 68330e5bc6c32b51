"""Curriculum metrics that need no model (docs/algorithm.md §11.4): how big and varied the tasks are.

All of them read program and literal text with `ast` only; nothing is evaluated.
"""

from __future__ import annotations

import ast
from collections import Counter
from statistics import fmean
from collections.abc import Iterable, Mapping, Sequence

from azr.selfplay.static_checks import AST_ERRORS

_MAX_LITERAL_CHARS = 20_000  # longer texts are classified without parsing


def _parse(program: str) -> ast.AST | None:
    try:
        return ast.parse(program)
    except AST_ERRORS:
        return None


def program_lines(program: str) -> int:
    """Non-blank lines: the paper's `avg_program_lines`."""
    return sum(1 for line in program.splitlines() if line.strip())


def ast_size(program: str) -> int | None:
    tree = _parse(program)
    return None if tree is None else sum(1 for _ in ast.walk(tree))


def cyclomatic_complexity(program: str) -> int | None:
    """McCabe's count: 1 + one per branch point (if, loop, except, boolean operand, case)."""
    tree = _parse(program)
    if tree is None:
        return None
    branches = 0
    for node in ast.walk(tree):
        if isinstance(node, (ast.If, ast.IfExp, ast.For, ast.AsyncFor, ast.While, ast.ExceptHandler, ast.Assert)):
            branches += 1
        elif isinstance(node, ast.BoolOp):
            branches += len(node.values) - 1
        elif isinstance(node, ast.comprehension):
            branches += 1 + len(node.ifs)
        elif isinstance(node, ast.match_case):
            branches += 1
    return 1 + branches


def value_kind(text: str) -> str:
    """The type a literal text denotes (`int`, `list`, `str`, ...), read from its syntax tree.

    Argument lists with several values are `tuple`, as the original's tuple check; anything
    that is not a literal is `expression`.
    """
    if len(text) > _MAX_LITERAL_CHARS:
        return "long"
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except AST_ERRORS:
        return "unparsable"
    if isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant):
        node = node.operand
    if isinstance(node, ast.Constant):
        return type(node.value).__name__
    kinds = {ast.List: "list", ast.Tuple: "tuple", ast.Set: "set", ast.Dict: "dict"}
    for node_type, name in kinds.items():
        if isinstance(node, node_type):
            return name
    return "expression"


def distinct_ratio(values: Sequence[str]) -> float:
    return len(set(values)) / len(values) if values else 0.0


def answer_diversity(values: Iterable[str], history: Mapping[str, int] | None = None) -> float:
    """Mean surprise of values against what was seen before: 1 - frequency, 1 if unseen."""
    history = history or {}
    total = sum(history.values())
    surprises = [1.0 - history.get(v, 0) / total if total else 1.0 for v in values]
    return fmean(surprises) if surprises else 0.0


def _mean(values: Iterable[float | int | None]) -> float:
    present = [float(v) for v in values if v is not None]
    return fmean(present) if present else 0.0


def program_metrics(programs: Sequence[str]) -> dict[str, float]:
    """Average size and complexity of a set of programs."""
    return {
        "avg_program_lines": _mean(program_lines(p) for p in programs),
        "avg_ast_size": _mean(ast_size(p) for p in programs),
        "avg_complexity": _mean(cyclomatic_complexity(p) for p in programs),
    }


def type_metrics(values: Sequence[str], prefix: str) -> dict[str, float]:
    """Number of distinct types and values, and the share of each type, for logging."""
    kinds = Counter(value_kind(v) for v in values)
    metrics = {f"{prefix}distinct_types": float(len(kinds)), f"{prefix}distinct_values": float(len(set(values)))}
    for kind, count in sorted(kinds.items()):
        metrics[f"{prefix}type_share/{kind}"] = count / len(values)
    return metrics


def rate(flags: Sequence[bool]) -> float:
    return sum(map(bool, flags)) / len(flags) if flags else 0.0


def group_rates(group: str, valid: Sequence[bool], format_ok: Sequence[bool]) -> dict[str, float]:
    """Per-group validity and format rates, keyed `group/valid_rate` and `group/format_rate`."""
    return {f"{group}/valid_rate": rate(valid), f"{group}/format_rate": rate(format_ok), f"{group}/count": float(len(valid))}
