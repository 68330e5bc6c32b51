"""Scoring generated code on EvalPlus and LiveCodeBench problems, in the sandbox.

Each solution is one sandbox program (azr/eval/benchmarks/evalplus.py, azr/eval/benchmarks/livecodebench.py) whose
`f()` returns a small literal: (status, first-stage verdict, full verdict, why it failed). It
runs with the determinism check, so a solution whose verdict changes between two processes with
different hash seeds is `nondeterministic`, not a lucky pass. The verdict text is parsed with
`ast.literal_eval`; nothing the solution produced is evaluated here.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from azr.eval.benchmarks import evalplus

from azr.eval.benchmarks import livecodebench
from azr.eval.benchmarks.problems import LiveCodeProblem, PlusProblem
from azr.eval.scoring.programs import solution_source
from azr.sandbox.api import ExecStatus, Executor, ProgramRun

if TYPE_CHECKING:
    from azr.config.schema import SandboxConfig
    from azr.eval.scoring.reasoning import ProblemScore

GeneratedProblem = PlusProblem | LiveCodeProblem
_ERROR_CHARS = 500
_VERDICTS = ("passed", "wrong", "timeout", "error")


def code_of(prediction: str) -> str:
    """The code of a prediction: its last fenced python block when it has one, else the text."""
    from azr.eval.prompting.paper_prompts import last_code_block

    return last_code_block(prediction) or prediction if "```" in prediction else prediction


def program_for(problem: GeneratedProblem, code: str) -> str:
    if isinstance(problem, PlusProblem):
        return evalplus.plus_program(problem, solution_source(problem, code))
    return livecodebench.livecode_program(problem, code)


def needs_sandbox(problems: Sequence[object]) -> bool:
    """Whether scoring runs anything: math answers are judged by math-verify workers instead."""
    from azr.eval.benchmarks.problems import MathProblem

    return any(not isinstance(p, MathProblem) for p in problems)


def sandbox_for(problems: Sequence[object], base: SandboxConfig) -> SandboxConfig:
    """The sandbox settings code-generation problems need: an outer limit that covers every
    test of the slowest problem (the per-test limits are enforced inside), the CPU time to
    match (twice: the determinism check calls `f` twice in one process), room for the test
    data and for stdin files. Unchanged when there are no such problems."""
    budgets = [
        evalplus.solution_time_budget(p) if isinstance(p, PlusProblem) else livecodebench.solution_time_budget(p)
        for p in problems if isinstance(p, (PlusProblem, LiveCodeProblem))
    ]
    if not budgets:
        return base
    timeout = max(base.timeout_s, 2 * max(budgets))
    return base.model_copy(update={
        "timeout_s": timeout, "cpu_time_s": max(base.cpu_time_s, math.ceil(timeout)),
        "file_size_mb": max(base.file_size_mb, 256), "memory_mb": max(base.memory_mb, 4096),
    })


def _verdict(output: str) -> tuple[str, bool, bool, str] | None:
    try:
        value = ast.literal_eval(output)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if (isinstance(value, tuple) and len(value) == 4 and value[0] in _VERDICTS
            and isinstance(value[1], bool) and isinstance(value[2], bool) and isinstance(value[3], str)):
        return value
    return None


def score_generated(
    problems: Sequence[GeneratedProblem], solutions: Sequence[str | None], executor: Executor
) -> list[ProblemScore]:
    """pass@1 of one solution per problem; `base_correct` is the base-only (EvalPlus) or
    public-tests-only (LiveCodeBench) verdict."""
    from azr.eval.scoring.reasoning import EMPTY, MISSING, ProblemScore

    results: list[ProblemScore | None] = []
    runs, positions = [], []
    for index, (problem, code) in enumerate(zip(problems, solutions, strict=True)):
        if code is None:
            results.append(ProblemScore(False, MISSING, "no prediction for this id", base_correct=False))
        elif not code.strip():
            results.append(ProblemScore(False, EMPTY, "no code in the response", base_correct=False))
        else:
            results.append(None)
            positions.append(index)
            runs.append(ProgramRun(program_for(problem, code_of(code)), ("",), check_determinism=True))
    for index, outcome in zip(positions, executor.run(runs) if runs else [], strict=True):
        call = outcome.calls[0]
        code = solutions[index] or ""
        if call.status is not ExecStatus.OK:
            results[index] = ProblemScore(False, call.status.value, call.error[:_ERROR_CHARS], code, base_correct=False)
            continue
        verdict = _verdict(call.output)
        if verdict is None:
            results[index] = ProblemScore(False, ExecStatus.ERROR.value, "the test harness returned no verdict", code,
                                          base_correct=False)
            continue
        status, first, full, why = verdict
        results[index] = ProblemScore(full, "ok" if status == "passed" else status, why[:_ERROR_CHARS], code,
                                      base_correct=first)
    return [r for r in results if r is not None]
