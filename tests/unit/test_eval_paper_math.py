"""Math answers: extraction (the <answer> block, nested \\boxed), math-verify equivalence on a
table of equivalent and non-equivalent pairs, OlympiadBench multiple answers, the time limit in
a separate process; the six public layouts; prediction ids; pass@k."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from azr.eval.benchmarks.registry import get_benchmark
from azr.eval.benchmarks.ids import row_id
from azr.eval.benchmarks.math_answers import extract_math_answer, last_boxed
from azr.eval.scoring.math_equivalence import MathCheck, MathChecker
from azr.eval.scoring.math_benchmarks import score_math
from azr.eval.scoring.passk import ks_for, pass_at_k
from azr.eval.benchmarks.problems import MathProblem
from tests.support.paper_fixtures import MATH_ROWS, write_jsonl


@pytest.fixture(scope="module")
def checker() -> Iterator[MathChecker]:
    with MathChecker(workers=2, timeout_s=30.0) as pool:
        yield pool


@pytest.mark.parametrize(
    ("response", "answer"),
    [
        ("so the answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("\\boxed{1} then \\boxed{\\sqrt{\\frac{a}{b}}}", "\\sqrt{\\frac{a}{b}}"),  # the last, nested braces kept
        ("<think>\\boxed{3}</think> <answer>The result is \\boxed{4}</answer>", "4"),  # the answer block wins
        ("<think>x</think><answer> 12 </answer>", "12"),  # an answer block without \\boxed
        ("the answer is \\boxed 7 done", "7"),
        ("\\fbox{9}", "9"),
        ("no final answer here", ""),
        ("unclosed \\boxed{12", ""),
    ],
)
def test_answer_extraction(response: str, answer: str) -> None:
    assert extract_math_answer(response) == answer


def test_last_boxed_handles_escaped_braces() -> None:
    assert last_boxed("\\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"


EQUIVALENT = [
    ("27", "27.0"), ("27.0", "27"), ("\\frac{1}{2}", "\\dfrac{1}{2}"), ("\\frac{1}{2}", "0.5"), ("\\frac12", "\\tfrac{1}{2}"),
    ("50\\%", "50"), ("3 \\text{ cm}", "3"), ("(1, 2)", "(1,2)"), ("[0, 1)", "[0,1)"), ("\\sqrt{2}", "2^{1/2}"),
    ("x^2+2x+1", "(x+1)^2"), ("\\pi", "\\pi"), ("-\\frac{3}{4}", "-0.75"), ("1000", "1,000"),
]
NOT_EQUIVALENT = [
    ("27", "28"), ("\\frac{1}{2}", "\\frac{1}{3}"), ("(1, 2)", "(2, 1)"), ("[0, 1)", "[0, 1]"), ("[0, 1)", "(0, 1)"),
    ("\\sqrt{2}", "1.4"), ("x+1", "x-1"), ("5", ""), ("12", "12a"),
]


def test_equivalence_table(checker: MathChecker) -> None:
    checks = [MathCheck((g,), (p,)) for g, p in EQUIVALENT + NOT_EQUIVALENT]
    verdicts = checker.check(checks)
    got = [v.correct for v in verdicts]
    expected = [True] * len(EQUIVALENT) + [False] * len(NOT_EQUIVALENT)
    wrong = [(pair, v) for pair, v, want in zip(EQUIVALENT + NOT_EQUIVALENT, verdicts, expected) if v.correct != want]
    assert got == expected, wrong


def test_responses_are_scored_through_extraction(checker: MathChecker) -> None:
    problems = [MathProblem("a", "q", ("\\frac{1}{2}",)), MathProblem("b", "q", ("27.0",)), MathProblem("c", "q", ("4",)),
                MathProblem("d", "q", ("2, -2",), multiple=True), MathProblem("e", "q", ("2, -2",), multiple=True),
                MathProblem("f", "q", ("3", "5"), multiple=True)]
    predictions = ["<think>...</think><answer>It is \\boxed{\\boxed{\\dfrac{1}{2}}}</answer>", "\\boxed{27}",
                   "4", "\\boxed{-2, 2}", "\\boxed{2}", "\\boxed{5, 3}"]
    scores = score_math(problems, predictions, checker)
    assert [s.correct for s in scores] == [True, True, True, True, False, True]
    assert scores[0].scored_prediction == "\\dfrac{1}{2}"
    missing = score_math(problems[:1], [None], checker)[0]
    assert missing.status == "missing" and not missing.correct
    empty = score_math(problems[:1], ["<answer>\\boxed{}</answer>"], checker)[0]
    assert empty.status == "empty" and not empty.correct
    assert not score_math(problems[2:3], ["I think 4 but I never box it"], checker)[0].correct


def test_a_check_over_its_time_limit_is_killed_and_the_pool_goes_on() -> None:
    with MathChecker(workers=1, timeout_s=0.05) as slow:
        verdicts = slow.check([MathCheck(("1",), ("1",)), MathCheck(("2",), ("2",))])
    assert [v.status for v in verdicts] == ["timeout", "timeout"] and not any(v.correct for v in verdicts)
    with MathChecker(workers=1, timeout_s=30.0) as pool:
        assert pool.check([MathCheck(("1",), ("1",))])[0].correct


@pytest.mark.parametrize("name", list(MATH_ROWS))
def test_math_layouts_load_with_their_ids(tmp_path: Path, name: str) -> None:
    folder, rows = MATH_ROWS[name]
    path = write_jsonl(tmp_path / folder / "test.jsonl", rows)
    problems = get_benchmark(name).load(str(path))
    first = problems[0]
    assert isinstance(first, MathProblem) and first.question
    expected_ids = {"aime24": "60", "aime25": "I-1", "amc23": "0", "math500": "test/algebra/1.json",
                    "minerva-math": "0", "olympiadbench": "1606"}
    assert first.id == expected_ids[name]
    expected_answers = {"aime24": ("4",), "aime25": ("9",), "amc23": ("27.0",), "math500": ("\\frac{1}{2}",),
                        "minerva-math": ("5",), "olympiadbench": ("2$, $-2",)}
    assert first.answers == expected_answers[name]
    if name == "olympiadbench":
        assert first.multiple and not problems[1].multiple and problems[1].answers == ("(-1,1)",)


def test_prediction_ids_follow_the_field_order_then_the_line_number() -> None:
    assert row_id({"id": 3, "task_id": "t", "unique_id": "u", "idx": 9}, 0) == "3"
    assert row_id({"task_id": "t", "unique_id": "u"}, 0) == "t"
    assert row_id({"unique_id": "u", "idx": 9}, 0) == "u"
    assert row_id({"idx": 9}, 4) == "9"
    assert row_id({"problem": "x"}, 4) == "4"
    assert row_id({"id": None, "idx": 0}, 4) == "0"


def test_olympiadbench_multiple_answers_in_one_string_are_split(checker: MathChecker) -> None:
    multi = MathProblem("1606", "q", ("2$, $-2",), multiple=True)
    assert [s.correct for s in score_math([multi, multi], ["\\boxed{-2, 2}", "\\boxed{2, 2}"], checker)] == [True, False]


def test_pass_at_k_is_the_unbiased_estimator() -> None:
    for n, c, k in [(5, 2, 1), (5, 2, 3), (10, 0, 4), (10, 10, 1), (6, 3, 6)]:
        brute = 1 - math.comb(n - c, k) / math.comb(n, k)
        draws = list(itertools.combinations([True] * c + [False] * (n - c), k))
        assert pass_at_k(n, c, k) == pytest.approx(brute) == pytest.approx(sum(any(d) for d in draws) / len(draws))
    assert ks_for(1) == [1] and ks_for(8) == [1, 2, 4, 8] and ks_for(10) == [1, 2, 4, 8, 10]
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_math_verify_timeout_notice_is_not_printed(capfd: pytest.CaptureFixture[str]) -> None:
    """math-verify's "Timeout is disabled" line (printed by each fresh worker on its first check:
    the limit is the worker's, not math-verify's) does not reach the user."""
    with MathChecker(workers=1) as fresh:
        assert [v.correct for v in fresh.check([MathCheck(("27",), ("27.0",))])] == [True]
    assert "Timeout is disabled" not in capfd.readouterr().err
