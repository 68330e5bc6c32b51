"""Curriculum metrics (docs/algorithm.md §11.4) on hand-checked programs and values."""

from __future__ import annotations

import pytest

from azr.selfplay.curriculum import (
    answer_diversity,
    ast_size,
    cyclomatic_complexity,
    distinct_ratio,
    group_rates,
    program_lines,
    program_metrics,
    type_metrics,
    value_kind,
)

PROGRAM = """def f(xs):
    total = 0

    for x in xs:
        if x > 0 and x % 2:
            total += x
    return total
"""


def test_program_size_and_complexity() -> None:
    assert program_lines(PROGRAM) == 6
    assert cyclomatic_complexity(PROGRAM) == 1 + 1 + 1 + 1  # for, if, one `and`
    assert cyclomatic_complexity("def f(a):\n    return a") == 1
    assert ast_size("x = 1") == 5  # Module, Assign, Name, Store, Constant
    assert ast_size("def f(:") is None and cyclomatic_complexity("def f(:") is None


def test_program_metrics_average() -> None:
    metrics = program_metrics([PROGRAM, "def f(a):\n    return a"])
    assert metrics["avg_program_lines"] == pytest.approx(4.0)
    assert metrics["avg_complexity"] == pytest.approx(2.5)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("1", "int"), ("-2.5", "float"), ("'a'", "str"), ("True", "bool"), ("None", "NoneType"),
        ("[1, 2]", "list"), ("(1,)", "tuple"), ("1, 'a'", "tuple"), ("{1}", "set"), ("{'a': 1}", "dict"),
        ("dict(a=1)", "expression"), ("f(", "unparsable"),
    ],
)
def test_value_kind(text: str, kind: str) -> None:
    assert value_kind(text) == kind


def test_diversity() -> None:
    assert distinct_ratio(["1", "1", "2", "3"]) == 0.75
    assert answer_diversity(["a", "b"]) == 1.0
    assert answer_diversity(["a", "z"], {"a": 3, "b": 1}) == pytest.approx((0.25 + 1.0) / 2)


def test_type_metrics_and_rates() -> None:
    metrics = type_metrics(["1", "2", "'a'", "[1]"], "deduction/output_")
    assert metrics["deduction/output_distinct_types"] == 3
    assert metrics["deduction/output_type_share/int"] == 0.5
    rates = group_rates("deduction_propose", [True, False, True, True], [True, True, False, False])
    assert rates == {"deduction_propose/valid_rate": 0.75, "deduction_propose/format_rate": 0.5, "deduction_propose/count": 4.0}
