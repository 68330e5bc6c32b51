"""A scripted executor for unit tests of the logic around the executor.

It executes nothing: each test states the result the sandbox would give. The real sandbox has
its own tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable, Sequence

from azr.sandbox.api import CallResult, Check, ExecStatus, ProgramRun, RunResult, Verdict


@dataclass
class ScriptedExecutor:
    """`outputs[(program, input)]` gives a call's result; `verdicts(check)` a check's verdict."""

    outputs: dict[tuple[str, str], CallResult] = field(default_factory=dict)
    verdict_fn: Callable[[Check], Verdict] | None = None
    run_batches: list[list[ProgramRun]] = field(default_factory=list)
    verify_batches: list[list[Check]] = field(default_factory=list)

    def run(self, runs: Sequence[ProgramRun]) -> list[RunResult]:
        self.run_batches.append(list(runs))
        results = []
        for run in runs:
            calls = tuple(
                self.outputs.get((run.program, i), CallResult(ExecStatus.ERROR, "", "KeyError: unscripted"))
                for i in run.inputs
            )
            results.append(RunResult(calls, duration_ms=1.0))
        return results

    def verify(self, checks: Sequence[Check]) -> list[Verdict]:
        self.verify_batches.append(list(checks))
        assert self.verdict_fn is not None, "this test did not script verdicts"
        return [self.verdict_fn(check) for check in checks]


def ok(output: str) -> CallResult:
    return CallResult(ExecStatus.OK, output)


WRONG_ANSWER = " hmm </think><answer>```output\n0\n```</answer>"
"""What the scripted policies answer on every second Monte-Carlo sample."""


def scripted_answer(prompt: str) -> str:
    """The scripted policies' answer, by what the prompt asks for: a valid deduction proposal, a
    broken abduction one, and right answers for the identity seed task and the new deduction task."""
    if "Write a New Python Code Snippet" in prompt and "predict your input" in prompt:  # deduction propose
        body = "```python\ndef f(xs):\n    return sorted(xs)[:2]\n```\n```input\n[5, 1, 4]\n```"
    elif "Write a New Python Code Snippet" in prompt:  # abduction propose
        body = "no code here"
    elif "```input\n'Hello world'\n```" in prompt and "Output of a Python" in prompt:  # deduction solve
        body = "```output\n'Hello world'\n```"
    elif "[5, 1, 4]" in prompt:  # Monte-Carlo solve of the new deduction task
        body = "```output\n[1, 4]\n```"
    else:
        body = "I am not sure."
    return f" let me think </think>\n<answer>{body}</answer>"
