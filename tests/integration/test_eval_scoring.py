"""Benchmark scoring semantics on the real sandbox, with a small CRUXEval-style fixture of our own
(tests/fixtures/eval/cruxeval_mini.jsonl, original schema): equivalent literals count, wrong ones
do not, non-literal inputs are evaluated in the program's namespace, and an output prediction
that restates `f(<input>)` never counts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from azr.config.loading import build_config
from azr.eval.benchmarks.registry import get_benchmark
from azr.eval.benchmarks.problems import ReasoningProblem
from azr.eval.scoring.reasoning import EMPTY, MISSING, RESTATES_CALL, normalise_prediction, restates_call, score_predictions
from azr.sandbox.api import ProgramRun
from azr.sandbox import SandboxExecutor
from azr.selfplay.task_types import TaskType

FIXTURE = Path(__file__).parents[1] / "fixtures" / "eval" / "cruxeval_mini.jsonl"
CONFIG = build_config("tiny", overrides=["sandbox.timeout_s=3"])


@pytest.fixture(scope="module")
def executor() -> Iterator[SandboxExecutor]:
    with SandboxExecutor(CONFIG.sandbox) as ex:
        yield ex


def problems(task: TaskType) -> dict[str, ReasoningProblem]:
    name = "cruxeval-o" if task is TaskType.DEDUCTION else "cruxeval-i"
    return {p.id: p for p in get_benchmark(name).load(str(FIXTURE))}  # type: ignore[misc]


def judge(executor: SandboxExecutor, task: TaskType, cases: list[tuple[str, str | None]]) -> list[tuple[bool, str]]:
    by_id = problems(task)
    scores = score_predictions([by_id[i] for i, _ in cases], [p for _, p in cases], executor)
    return [(s.correct, s.status) for s in scores]


def test_the_fixture_outputs_are_what_the_programs_return(executor: SandboxExecutor) -> None:
    fixture = list(problems(TaskType.DEDUCTION).values())
    assert len(fixture) == 12
    results = executor.run([ProgramRun(p.code, (p.input,), check_determinism=False) for p in fixture])
    assert [r.calls[0].output for r in results] == [p.output for p in fixture]


def test_gold_answers_score_full_marks(executor: SandboxExecutor) -> None:
    outputs = problems(TaskType.DEDUCTION)
    inputs = problems(TaskType.ABDUCTION)
    assert all(correct for correct, _ in judge(executor, TaskType.DEDUCTION, [(i, p.output) for i, p in outputs.items()]))
    # Gold inputs include non-literal expressions ('Racecar'.lower(), list(range(10)), 4).
    assert all(correct for correct, _ in judge(executor, TaskType.ABDUCTION, [(i, p.input) for i, p in inputs.items()]))


def test_output_prediction_is_value_equality_of_literals(executor: SandboxExecutor) -> None:
    cases = [
        ("crux_0", "[6,4,8,3,1]"),  # spacing
        ("crux_1", '"Alpha-Beta-Gamma"'),  # other quotes
        ("crux_2", "(3, \"b\")"),
        ("crux_3", "{'p': 2, 'i': 4, 's': 4}"),  # dict order
        ("crux_4", "2.50"),
        ("crux_7", "{2, 9}"),  # set order
        ("crux_9", "None"),
        ("crux_0", "[6, 4, 8, 1, 3]"),  # wrong order
        ("crux_1", "'alpha-Beta-Gamma'"),
        ("crux_4", "2"),
        ("crux_4", "5 / 2"),  # right value, but not a literal
        ("crux_8", "'10'"),  # a string is not the int
        ("crux_10", "[[1, 4], [2, 5], [3, 6]"),  # unbalanced
    ]
    verdicts = judge(executor, TaskType.DEDUCTION, cases)
    assert [c for c, _ in verdicts] == [True] * 7 + [False] * 6
    assert {status for _, status in verdicts} == {"ok"}


def test_an_output_prediction_that_restates_the_call_does_not_count(executor: SandboxExecutor) -> None:
    cases = [
        ("crux_0", "f([3, 8, 1, 4, 6])"),
        ("crux_0", "assert f([3, 8, 1, 4, 6]) == f([3, 8, 1, 4, 6])"),
        ("crux_8", "[f('  spaced out  ')][0]"),
        ("crux_0", "assert f([3, 8, 1, 4, 6]) == [6, 4, 8, 3, 1]"),  # the original harness' form
        ("crux_8", "f('  spaced out  ') == 10"),
    ]
    assert judge(executor, TaskType.DEDUCTION, cases) == [
        (False, RESTATES_CALL), (False, RESTATES_CALL), (False, RESTATES_CALL), (True, "ok"), (True, "ok"),
    ]


def test_a_string_output_that_mentions_f_is_not_a_restated_call(executor: SandboxExecutor) -> None:
    problem = ReasoningProblem("wrap", TaskType.DEDUCTION, "def f(x):\n    return 'f(' + x + ')'\n", "'y'", "'f(y)'")
    (score,) = score_predictions([problem], ["'f(y)'"], executor)
    assert score.correct and score.status == "ok"
    assert restates_call("f(1) + 1") and not restates_call("'f(1)'") and not restates_call("g(1)")


def test_input_prediction_runs_f_on_the_answer(executor: SandboxExecutor) -> None:
    cases = [
        ("crux_6", "[0, 1, 2, 3], 4"),  # another input with the same output
        ("crux_6", "list(range(4)), 9"),  # a non-literal input, evaluated in the sandbox
        ("crux_8", "'x' * 10"),
        ("crux_5", "'abba'"),
        ("crux_8", "f('ab' * 5)"),  # a bare call of f is read as its arguments
        ("crux_8", "assert f('0123456789') == 10"),
        ("crux_8", "'short'"),  # wrong
        ("crux_4", "'a', 1"),  # raises TypeError in f
        ("crux_4", "__import__('os').getpid(), 1"),  # not an input: refused
    ]
    assert judge(executor, TaskType.ABDUCTION, cases) == [
        (True, "ok"), (True, "ok"), (True, "ok"), (True, "ok"), (True, "ok"), (True, "ok"),
        (False, "ok"), (False, "error"), (False, "blocked"),
    ]


def test_inputs_may_use_names_the_program_defines(executor: SandboxExecutor) -> None:
    code = "SCALE = 3\n\ndef f(x):\n    return x * SCALE\n"
    problem = ReasoningProblem("scaled", TaskType.ABDUCTION, code, "SCALE + 1", "12")
    scores = score_predictions([problem, problem], ["SCALE + 1", "SCALE"], executor)
    assert [s.correct for s in scores] == [True, False]


def test_empty_and_missing_predictions_never_run(executor: SandboxExecutor) -> None:
    # f has a default argument: an empty answer run as `f()` would match, so it must not run.
    default = ReasoningProblem("default", TaskType.ABDUCTION, "def f(x=2):\n    return x\n", "2", "2")
    scores = score_predictions([default, default, default], ["", "  ", None], executor)
    assert [(s.correct, s.status) for s in scores] == [(False, EMPTY), (False, EMPTY), (False, MISSING)]


@pytest.mark.parametrize(
    ("task", "text", "expected"),
    [
        (TaskType.DEDUCTION, "assert f(1, 2) == [3]", "[3]"),
        (TaskType.DEDUCTION, "[3] == f(1, 2)", "[3]"),
        (TaskType.DEDUCTION, "  'abc'  ", "'abc'"),
        (TaskType.DEDUCTION, "f(1)", "f(1)"),
        (TaskType.ABDUCTION, "assert f(1, 'x') == 5", "1, 'x'"),
        (TaskType.ABDUCTION, "f( [1, 2] )", "[1, 2]"),
        (TaskType.ABDUCTION, "1, 2", "1, 2"),
        (TaskType.ABDUCTION, "g(1)", "g(1)"),
        (TaskType.ABDUCTION, "not python (", "not python ("),
    ],
)
def test_assertion_shaped_predictions_are_reduced(task: TaskType, text: str, expected: str) -> None:
    assert normalise_prediction(task, text) == expected


def test_an_empty_input_is_right_for_a_function_without_parameters(executor: SandboxExecutor) -> None:
    # CRUXEval-I: f() has the empty string as its input; an empty prediction is then an answer.
    problem = ReasoningProblem("no_params", TaskType.ABDUCTION, "def f():\n    return [1, 2]\n", "", "[1, 2]")
    scores = score_predictions([problem, problem], ["", "1"], executor)
    assert [s.correct for s in scores] == [True, False]
