"""The executor interface the algorithm talks to (docs/algorithm.md §6).

The algorithm never runs model text itself: it hands programs and answers to an `Executor`
and gets back plain values (repr strings, statuses, verdicts). The sandbox package implements
this interface with isolated processes; unit tests of the logic around it may use a fake.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, Union
from collections.abc import Sequence


class ExecStatus(StrEnum):
    OK = "ok"
    ERROR = "error"  # the program raised; `error` holds "ExcType: message"
    TIMEOUT = "timeout"
    MEMORY = "memory"
    BLOCKED = "blocked"  # policy: banned import, or a denied system access
    NONDETERMINISTIC = "nondeterministic"
    OUTPUT_LIMIT = "output_limit"


@dataclass(frozen=True)
class ProgramRun:
    """One program and the inputs to call `f` with; inputs are argument texts like `1, 'a'`.

    Inputs are evaluated in the program's own namespace, so names it defines may appear.
    """

    program: str
    inputs: tuple[str, ...]
    check_determinism: bool = True


@dataclass(frozen=True)
class CallResult:
    status: ExecStatus
    output: str = ""  # repr of f(*input) when status is OK
    error: str = ""  # "ExcType: message" for ERROR, a short reason otherwise

    @property
    def error_type(self) -> str:
        """The exception class name of an ERROR (the text before the first colon)."""
        return self.error.split(":", 1)[0].strip() if self.status is ExecStatus.ERROR else ""


@dataclass(frozen=True)
class RunResult:
    calls: tuple[CallResult, ...]
    duration_ms: float = 0.0

    @property
    def first_failure(self) -> CallResult | None:
        return next((c for c in self.calls if c.status is not ExecStatus.OK), None)

    @property
    def ok(self) -> bool:
        return bool(self.calls) and self.first_failure is None

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(c.output for c in self.calls)


@dataclass(frozen=True)
class DeductionCheck:
    """Is the answer equal in value to the gold output?

    Literals are compared as values; a text that is not a literal (`Counter({'a': 1})`) is
    evaluated in `program`'s namespace, the gold one by running `f` on `gold_input` when that
    reproduces it. Without a program only literals can match.
    """

    gold_output: str
    answer: str
    program: str = ""
    gold_input: str | None = None
    comparison: str = "namespace"  # reward.answer_comparison; `original`: both texts evaluated alone


@dataclass(frozen=True)
class AbductionCheck:
    """Does `f(answer_input)` equal the gold output? Any such input is correct."""

    program: str
    gold_output: str
    answer_input: str
    gold_input: str | None = None  # lets a gold output that is not a literal be rebuilt by f
    comparison: str = "namespace"  # `original`: an answer over several lines fails, as in the original


@dataclass(frozen=True)
class InductionCheck:
    """Does the candidate program reproduce each hidden output from its input?"""

    candidate_program: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    imports: tuple[str, ...] = field(default=())  # the gold program's imports, prepended
    gold_program: str = ""  # evaluates hidden outputs that are not literals (never shown to the candidate)
    comparison: str = "namespace"  # `original`: a hidden input over several lines fails, as in the original


Check = Union[DeductionCheck, AbductionCheck, InductionCheck]


@dataclass(frozen=True)
class Verdict:
    """How many of a check's comparisons matched; `None` accuracy when it could not run."""

    matched: int
    total: int
    status: ExecStatus = ExecStatus.OK
    error: str = ""

    @property
    def accuracy(self) -> float | None:
        if self.total == 0:
            return None
        return self.matched / self.total

    @property
    def all_correct(self) -> bool:
        return self.total > 0 and self.matched == self.total


class Executor(Protocol):
    """Runs untrusted programs and checks; both calls are batched for throughput."""

    def run(self, runs: Sequence[ProgramRun]) -> list[RunResult]:
        ...

    def verify(self, checks: Sequence[Check]) -> list[Verdict]:
        ...
