"""Scoring math answers: the answer read from each response, judged by math-verify in worker
processes (azr/eval/scoring/math_equivalence.py). The calling process only reads text."""

from __future__ import annotations

import atexit
from collections.abc import Sequence
from typing import TYPE_CHECKING

from azr.eval.benchmarks.math_answers import extract_math_answer, split_answers
from azr.eval.scoring.math_equivalence import MathCheck, MathChecker
from azr.eval.benchmarks.problems import MathProblem

if TYPE_CHECKING:
    from azr.eval.scoring.reasoning import ProblemScore

_checker: MathChecker | None = None


def shared_checker() -> MathChecker:
    """One set of checker processes per process, started on first use (they import sympy, which
    takes seconds) and stopped at exit."""
    global _checker
    if _checker is None:
        _checker = MathChecker()
        atexit.register(_checker.close)
    return _checker


def answer_of(prediction: str) -> str:
    """The answer in a prediction: a whole response (its <answer> block or last \\boxed{}), or a
    bare answer such as `27` or `\\frac{1}{2}`."""
    if "<answer>" in prediction or "\\boxed" in prediction or "\\fbox" in prediction:
        return extract_math_answer(prediction)
    return prediction.strip().strip("$").strip()


def math_check(problem: MathProblem, answer: str) -> MathCheck:
    if problem.multiple:
        gold = tuple(part for answer_part in problem.answers for part in split_answers(answer_part))
        return MathCheck(gold, tuple(split_answers(answer)))
    return MathCheck(problem.answers[:1], (answer,))


def score_math(
    problems: Sequence[MathProblem], predictions: Sequence[str | None], checker: MathChecker | None = None
) -> list[ProblemScore]:
    from azr.eval.scoring.reasoning import EMPTY, MISSING, ProblemScore

    answers = [answer_of(p) if p is not None else None for p in predictions]
    to_check = [i for i, a in enumerate(answers) if a]
    verdicts = (checker or shared_checker()).check([math_check(problems[i], answers[i] or "") for i in to_check])
    results: list[ProblemScore] = [
        ProblemScore(False, MISSING, "no prediction for this id") if a is None
        else ProblemScore(False, EMPTY, "no answer found (no <answer> block or \\boxed{})") for a in answers
    ]
    for index, verdict in zip(to_check, verdicts):
        results[index] = ProblemScore(verdict.correct, verdict.status, verdict.error, answers[index] or "")
    return results
