"""The problem records every benchmark is loaded into.

Code reasoning (a program `f`, an input, its output; the model predicts one of the two), code
generation with hidden tests (HumanEval), with differential tests against a canonical solution
(EvalPlus), with input/output tests (LiveCodeBench), and math problems with a final answer.
They are plain strings, shown in prompts and run only in the sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass

from azr.selfplay.task_types import TaskType


class EvalDataError(ValueError):
    """Benchmark data or a prediction file cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class ReasoningProblem:
    """Predict the output of `f(input)` (deduction) or an input giving `output` (abduction).

    `input` is the text between the parentheses of `f(...)`, possibly a non-literal expression;
    `output` is the repr of the value `f` returns.
    """

    id: str
    task: TaskType
    code: str
    input: str
    output: str

    def __post_init__(self) -> None:
        if self.task not in (TaskType.DEDUCTION, TaskType.ABDUCTION):
            raise ValueError(f"a reasoning problem is deduction or abduction, not {self.task.value}")


@dataclass(frozen=True)
class CodeProblem:
    """Complete a function from its signature and docstring; `test` defines `check(candidate)`."""

    id: str
    prompt: str
    test: str
    entry_point: str
    canonical_solution: str = ""


@dataclass(frozen=True)
class PlusProblem:
    """An EvalPlus problem (HumanEval+ or MBPP+): the candidate's outputs on the base and plus
    inputs are compared with the canonical solution's. Inputs are JSON text (a list of argument
    lists), decoded and typed only inside the sandbox."""

    id: str
    dataset: str  # "humaneval" or "mbpp": selects the input types and the special oracles
    prompt: str
    entry_point: str
    canonical_solution: str
    base_input: str
    plus_input: str
    atol: float = 0.0


@dataclass(frozen=True)
class LiveCodeProblem:
    """A LiveCodeBench code-generation problem: a LeetCode-style method (`func_name` of class
    Solution, functional tests) or a stdin/stdout program; `tests` is the JSON list of public
    then private tests, each {"input", "output", "testtype"}."""

    id: str
    title: str
    question: str
    starter_code: str
    platform: str
    contest_date: str  # ISO date-time, as in the dataset
    difficulty: str
    func_name: str  # "" for stdin/stdout problems
    tests: str
    public_tests: int


@dataclass(frozen=True)
class MathProblem:
    """A math problem with a final answer; `answers` holds several gold answers only for
    OlympiadBench problems whose `final_answer` lists several (all must be given)."""

    id: str
    question: str
    answers: tuple[str, ...]
    multiple: bool = False
    unit: str = ""


Problem = ReasoningProblem | CodeProblem | PlusProblem | LiveCodeProblem | MathProblem
