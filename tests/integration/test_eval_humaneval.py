"""HumanEval through the real sandbox: the package's canonical solutions pass 164/164, empty
completions pass none, whole-function answers work, and a solution may define its own `f`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from azr.config.loading import build_config
from azr.eval.benchmarks.registry import get_benchmark
from azr.eval.benchmarks.problems import CodeProblem
from azr.eval.scoring.programs import defines_function, solution_source
from azr.eval.scoring.reasoning import score_predictions
from azr.sandbox import SandboxExecutor

CONFIG = build_config("tiny", overrides=["sandbox.timeout_s=3", "sandbox.cpu_time_s=3"])


@pytest.fixture(scope="module")
def executor() -> Iterator[SandboxExecutor]:
    with SandboxExecutor(CONFIG.sandbox) as ex:
        yield ex


@pytest.fixture(scope="module")
def problems() -> list[CodeProblem]:
    loaded = get_benchmark("humaneval").load()
    assert all(isinstance(p, CodeProblem) for p in loaded)
    return loaded  # type: ignore[return-value]


def by_id(problems: list[CodeProblem], task_id: str) -> CodeProblem:
    return next(p for p in problems if p.id == task_id)


def test_canonical_solutions_pass_every_problem(executor: SandboxExecutor, problems: list[CodeProblem]) -> None:
    assert len(problems) == 164 and len({p.id for p in problems}) == 164
    scores = score_predictions(problems, [p.canonical_solution for p in problems], executor)
    failures = [(p.id, s.status, s.error) for p, s in zip(problems, scores) if not s.correct]
    assert failures == []


def test_empty_solutions_pass_none(executor: SandboxExecutor, problems: list[CodeProblem]) -> None:
    scores = score_predictions(problems, [""] * len(problems), executor)
    assert sum(s.correct for s in scores) == 0
    assert {s.status for s in scores} == {"error"}


def test_whole_function_answers_and_wrong_ones(executor: SandboxExecutor, problems: list[CodeProblem]) -> None:
    first = by_id(problems, "HumanEval/0")
    whole = first.prompt + first.canonical_solution  # as a chat model writes it: the whole function
    assert defines_function(whole, first.entry_point) and not defines_function(first.canonical_solution, first.entry_point)
    wrong = "    return True\n"
    looping = "    while True:\n        pass\n"
    scores = score_predictions([first] * 3, [whole, wrong, looping], executor)
    assert [(s.correct, s.status) for s in scores] == [(True, "ok"), (False, "error"), (False, "timeout")]
    assert "AssertionError" in scores[1].error


def test_a_solution_may_define_and_recurse_into_its_own_f(executor: SandboxExecutor, problems: list[CodeProblem]) -> None:
    problem = by_id(problems, "HumanEval/106")
    assert problem.entry_point == "f"
    recursive = (
        "def f(n):\n"
        "    if n == 0:\n"
        "        return []\n"
        "    if n % 2 == 0:\n"
        "        value = 1\n"
        "        for k in range(1, n + 1):\n"
        "            value *= k\n"
        "    else:\n"
        "        value = n * (n + 1) // 2\n"
        "    return f(n - 1) + [value]\n"
    )
    assert solution_source(problem, recursive).endswith(recursive)
    (score,) = score_predictions([problem], [recursive], executor)
    assert score.correct, score.error
