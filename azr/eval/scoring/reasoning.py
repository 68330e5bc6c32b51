"""Scoring predictions against benchmark problems, with every execution in the sandbox.

- Output prediction (CRUXEval-O, custom `output`): value equality of two literals, decided in
  the sandbox (`DeductionCheck`), so `(1,)` equals `(1, )` and `1` equals `1.0`. A prediction that
  calls `f` (restating `f(<input>)` instead of computing it) never counts, and neither does any
  other non-literal expression.
- Input prediction (CRUXEval-I, custom `input`): `f` is run on the predicted argument text in the
  sandbox (evaluated in the program's namespace, so non-literal expressions work) and its result
  compared with the gold output (`AbductionCheck`); any input that works counts.
- HumanEval: the completion and the tests run in the sandbox; pass@1 is whether `check` passes.
- HumanEval+, MBPP+, LiveCodeBench: azr/eval/scoring/code_benchmarks.py; math: azr/eval/scoring/math_benchmarks.py.

A prediction written as the benchmark's assertion (`assert f(x) == y`, or `f(x)` for an input)
is reduced to the predicted part first, so predictions made for the original harness score too.
Here model text is only parsed (`ast.parse`), never evaluated.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass

from azr.eval.benchmarks.problems import CodeProblem, LiveCodeProblem, MathProblem, PlusProblem, Problem, ReasoningProblem
from azr.eval.scoring.programs import humaneval_program
from azr.sandbox.api import AbductionCheck, Check, DeductionCheck, ExecStatus, Executor, ProgramRun
from azr.selfplay.solution_scoring import verify_unique
from azr.selfplay.static_checks import AST_ERRORS
from azr.selfplay.task_types import TaskType

# Statuses decided before anything runs; the others are the executor's (azr.sandbox.api.ExecStatus).
MISSING = "missing"  # no prediction was given for the problem (azr eval score)
EMPTY = "empty"  # the prediction is empty
RESTATES_CALL = "restates_call"  # an output prediction that calls f instead of giving a value
_ERROR_CHARS = 500


@dataclass(frozen=True)
class ProblemScore:
    correct: bool
    status: str  # "ok" when the prediction was judged (see `correct`), else why it could not be
    error: str = ""
    scored_prediction: str = ""  # what was checked, after reducing an assertion
    base_correct: bool | None = None  # EvalPlus base tests only / LiveCodeBench public tests only


def _is_call_of_f(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "f"


def _arguments_text(source: str, call: ast.Call) -> str | None:
    segment = ast.get_source_segment(source, call)
    if segment is None or "(" not in segment:
        return None
    return segment[segment.index("(") + 1 : segment.rindex(")")].strip()


def _parse(text: str) -> ast.Module | None:
    try:
        return ast.parse(text)
    except AST_ERRORS:
        return None


def normalise_prediction(task: TaskType, prediction: str) -> str:
    """The predicted output (or argument text) out of an assertion-shaped prediction.

    `assert f(3) == 9` and `f(3) == 9` give `9` for output prediction and `3` for input
    prediction; a bare `f(3)` gives `3` for input prediction. Anything else is returned stripped.
    """
    text = prediction.strip()
    tree = _parse(text)
    if tree is None or len(tree.body) != 1:
        return text
    statement = tree.body[0]
    node = statement.test if isinstance(statement, ast.Assert) else getattr(statement, "value", None)
    if task is TaskType.ABDUCTION and node is not None and _is_call_of_f(node):
        return _arguments_text(text, node) or text
    if not (isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq)):
        return text
    left, right = node.left, node.comparators[0]
    call, value = (left, right) if _is_call_of_f(left) else (right, left) if _is_call_of_f(right) else (None, None)
    if call is None:
        return text
    if task is TaskType.ABDUCTION:
        return _arguments_text(text, call) or text
    return ast.get_source_segment(text, value) or text


def restates_call(prediction: str) -> bool:
    """Whether an output prediction calls `f` anywhere (it restates the question)."""
    tree = _parse(prediction)
    return tree is not None and any(_is_call_of_f(node) for node in ast.walk(tree))


def _reasoning_check(problem: ReasoningProblem, prediction: str) -> Check | ProblemScore:
    """The sandbox check for one reasoning prediction, or its score when nothing needs to run."""
    # An empty input is a real answer where the problem's own input is empty: `f()`, a
    # function without parameters (CRUXEval-I). Elsewhere it stands for no answer.
    if not prediction and (problem.task is TaskType.DEDUCTION or problem.input.strip()):
        return ProblemScore(False, EMPTY, "the prediction is empty")
    if problem.task is TaskType.DEDUCTION:
        if restates_call(prediction):
            return ProblemScore(False, RESTATES_CALL, "the prediction calls f instead of giving its value", prediction)
        return DeductionCheck(gold_output=problem.output, answer=prediction, program=problem.code,
                              gold_input=problem.input)
    return AbductionCheck(program=problem.code, gold_output=problem.output, answer_input=prediction,
                          gold_input=problem.input)


def score_reasoning(
    problems: Sequence[ReasoningProblem], predictions: Sequence[str | None], executor: Executor
) -> list[ProblemScore]:
    planned: list[Check | ProblemScore] = []
    scored: list[str] = []
    for problem, prediction in zip(problems, predictions, strict=True):
        if prediction is None:
            planned.append(ProblemScore(False, MISSING, "no prediction for this id"))
            scored.append("")
            continue
        text = normalise_prediction(problem.task, prediction)
        planned.append(_reasoning_check(problem, text))
        scored.append(text)
    checks = [item if not isinstance(item, ProblemScore) else None for item in planned]
    verdicts = verify_unique(executor, checks)
    results = []
    for item, verdict, text in zip(planned, verdicts, scored):
        if isinstance(item, ProblemScore):
            results.append(item)
        else:
            assert verdict is not None
            results.append(ProblemScore(verdict.all_correct, verdict.status.value, verdict.error[:_ERROR_CHARS], text))
    return results


def score_code(
    problems: Sequence[CodeProblem], completions: Sequence[str | None], executor: Executor
) -> list[ProblemScore]:
    """pass@1 of one completion per problem; an empty completion still runs (and fails)."""
    runs, positions = [], []
    results: list[ProblemScore | None] = []
    for index, (problem, completion) in enumerate(zip(problems, completions, strict=True)):
        if completion is None:
            results.append(ProblemScore(False, MISSING, "no prediction for this id"))
            continue
        results.append(None)
        positions.append(index)
        runs.append(ProgramRun(humaneval_program(problem, completion), ("",), check_determinism=False))
    for index, outcome in zip(positions, executor.run(runs) if runs else [], strict=True):
        call = outcome.calls[0]
        passed = call.status is ExecStatus.OK and call.output == "True"
        results[index] = ProblemScore(passed, call.status.value, call.error[:_ERROR_CHARS], completions[index] or "")
    return [r for r in results if r is not None]


def score_predictions(
    problems: Sequence[Problem], predictions: Sequence[str | None], executor: Executor
) -> list[ProblemScore]:
    """One score per problem, in order; None predictions are missing. Batched: one executor call
    for the reasoning problems and one for the code problems."""
    if len(problems) != len(predictions):
        raise ValueError(f"{len(problems)} problems but {len(predictions)} predictions")
    from azr.eval.scoring.code_benchmarks import score_generated
    from azr.eval.scoring.math_benchmarks import score_math

    kinds = (
        (ReasoningProblem, score_reasoning), (CodeProblem, score_code),
        ((PlusProblem, LiveCodeProblem), score_generated), (MathProblem, lambda p, q, _: score_math(p, q)),
    )
    scores: list[ProblemScore | None] = [None] * len(problems)
    for kind, scorer in kinds:
        chosen = [i for i, p in enumerate(problems) if isinstance(p, kind)]  # type: ignore[arg-type]
        if not chosen:
            continue
        found = scorer([problems[i] for i in chosen], [predictions[i] for i in chosen], executor)  # type: ignore[operator]
        for index, score in zip(chosen, found, strict=True):
            scores[index] = score
    return [s for s in scores if s is not None]
