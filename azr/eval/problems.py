"""The problem records every benchmark is loaded into.

Two shapes cover the benchmarks: a code-reasoning problem (a program `f`, an input, its output;
the model predicts one of the two) and a code-generation problem (a HumanEval-style prompt with
hidden tests). They are plain strings, shown in prompts and run only in the sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass

from azr.task_types import TaskType


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


Problem = ReasoningProblem | CodeProblem
