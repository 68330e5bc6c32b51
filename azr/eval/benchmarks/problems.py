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


@dataclass(frozen=True)
class SkippedRow:
    """A row of a benchmark file that cannot be used: it is left out with a warning and scored
    as a failure, so the denominator stays the file's size and numbers stay comparable."""

    id: str  # the row's id, as ids.row_id gives it
    where: str  # e.g. "MbppPlus.jsonl line 364"
    reason: str
    position: int = 0  # the row's 0-based place in the file (for --limit)


class LoadedProblems(list):  # list[Problem]; the rows left out ride along
    """The usable problems of a file, in file order, with the rows that had to be skipped."""

    def __init__(self, problems: list, skipped: list[SkippedRow] | tuple = (), positions: list[int] | None = None):
        super().__init__(problems)
        self.skipped = tuple(skipped)
        self.positions = list(positions) if positions is not None else list(range(len(problems)))

    def first(self, limit: int) -> LoadedProblems:
        """The first `limit` problems and the skipped rows that came before the last of them."""
        if limit >= len(self):
            return self
        end = self.positions[limit - 1] if limit > 0 else -1
        return LoadedProblems(self[:limit], [row for row in self.skipped if row.position < end], self.positions[:limit])

    def where(self, keep: list[bool]) -> LoadedProblems:
        """The problems `keep` marks (a date window); the skipped rows stay (their dates are unknown)."""
        chosen = [i for i, k in enumerate(keep) if k]
        return LoadedProblems([self[i] for i in chosen], self.skipped, [self.positions[i] for i in chosen])


def skipped_notes(problems: list) -> list[str]:
    """One warning per skipped row of a load, for the user."""
    return [f"skipped {row.where} (id {row.id!r}): {row.reason}; it counts as a failure"
            for row in getattr(problems, "skipped", ())]
