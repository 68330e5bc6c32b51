"""Validating proposed tasks (docs/algorithm.md §5): static checks here, execution in the executor.

Deduction/abduction proposals: banned imports -> shape of `f(<input>)` -> `input()` guard ->
run (twice, for determinism) -> output length policy. Induction proposals run their source
program on every proposed input; one failing input invalidates the whole proposal.
Checks are batched: one executor call per batch of proposals.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

from azr.config.schema import TaskConfig
from azr.sandbox.answer_rules import original_rule_passes
from azr.sandbox.api import CallResult, ExecStatus, Executor, ProgramRun
from azr.selfplay.parsing import InductionProposal, ProgramProposal
from azr.selfplay.rejection import Reason
from azr.selfplay.task_records import InductionTask, Triplet
from azr.selfplay.static_checks import argument_syntax_error, calls_input_builtin, find_banned_imports, program_syntax_error

_STATUS_REASONS = {
    ExecStatus.ERROR: Reason.RUNTIME_ERROR,
    ExecStatus.TIMEOUT: Reason.TIMEOUT,
    ExecStatus.MEMORY: Reason.MEMORY,
    ExecStatus.BLOCKED: Reason.BLOCKED,
    ExecStatus.NONDETERMINISTIC: Reason.NONDETERMINISTIC,
    ExecStatus.OUTPUT_LIMIT: Reason.OUTPUT_LIMIT,
}


@dataclass(frozen=True)
class Validation:
    """The verdict on one proposal; `task` is the buffer entry when valid."""

    task: Triplet | InductionTask | None
    reason: Reason | None = None
    detail: str = ""

    @property
    def valid(self) -> bool:
        return self.task is not None

    @property
    def label(self) -> str:
        """`runtime_error:ValueError` style label for logs; '' when valid."""
        if self.reason is Reason.RUNTIME_ERROR and self.detail:
            return f"{self.reason.value}:{self.detail.split(':', 1)[0].strip()}"
        return self.reason.value if self.reason else ""


def truncate_output(text: str, max_chars: int) -> str:
    """head + '...' + tail, as the original stored long outputs (docs/algorithm.md §6.4)."""
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return text[:half] + "..." + text[-half:]


def _output_or_failure(call: CallResult, exception_rule: str) -> CallResult | None:
    """The call as validation reads it: a failure the original rule lets pass becomes an OK
    call with output ''; None for a real failure."""
    if call.status is ExecStatus.OK:
        return call
    if exception_rule == "original" and original_rule_passes(call.status.value, call.error):
        return CallResult(ExecStatus.OK, "", call.error)
    return None


def _failure_of(call: CallResult) -> Validation:
    return Validation(None, _STATUS_REASONS[call.status], call.error)


def _apply_output_policy(output: str, tasks: TaskConfig) -> str | Validation:
    output = output.strip()
    limit = tasks.output_max_chars
    if limit is None or len(output) <= limit:
        return output
    if tasks.output_overflow == "reject":
        return Validation(None, Reason.OUTPUT_TOO_LONG, f"{len(output)} chars > {limit}")
    return truncate_output(output, limit)


def _static_failure(program: str, inputs: Sequence[str], banned: Sequence[str]) -> Validation | None:
    if banned:
        uses = find_banned_imports(program, banned)
        if uses:
            return Validation(
                None, Reason.BANNED_IMPORT, "; ".join(f"{u.entry} ({u.where})" for u in uses)
            )
    problem = program_syntax_error(program) or next(filter(None, map(argument_syntax_error, inputs)), None)
    if problem:
        return Validation(None, Reason.SYNTAX_ERROR, problem)
    if calls_input_builtin(program, *(f"f({i})" for i in inputs)):
        return Validation(None, Reason.INPUT_CALL_GUARD, "the program or an input calls input()")
    return None


def validate_program_proposals(
    proposals: Sequence[ProgramProposal],
    executor: Executor,
    tasks: TaskConfig,
    *,
    check_determinism: bool = True,
    exception_rule: str = "any_exception",
) -> list[Validation]:
    """Validate deduction/abduction proposals; valid ones become `Triplet`s (step 0).

    `exception_rule` is `sandbox.exception_rule` (`original_rule_passes`)."""
    results: list[Validation | None] = []
    runs: list[ProgramRun] = []
    for proposal in proposals:
        failure = _static_failure(proposal.program, [proposal.input], tasks.banned_imports)
        results.append(failure)
        if failure is None:
            runs.append(ProgramRun(proposal.program, (proposal.input,), check_determinism))
    executed = iter(executor.run(runs)) if runs else iter(())
    final: list[Validation] = []
    for proposal, static in zip(proposals, results):
        if static is not None:
            final.append(static)
            continue
        run = next(executed)
        if not run.calls:
            final.append(Validation(None, Reason.RUNTIME_ERROR, "no result"))
            continue
        call = _output_or_failure(run.calls[0], exception_rule)
        if call is None:
            final.append(_failure_of(run.calls[0]))
            continue
        output = _apply_output_policy(call.output, tasks)
        if isinstance(output, Validation):
            final.append(output)
            continue
        final.append(
            Validation(Triplet(proposal.program, proposal.input, output, proposal.imports))
        )
    return final


def validate_induction_proposals(
    proposals: Sequence[InductionProposal],
    sources: Sequence[Triplet],
    executor: Executor,
    tasks: TaskConfig,
    *,
    check_determinism: bool = True,
    exception_rule: str = "any_exception",
) -> list[Validation]:
    """Validate induction proposals against the program each was shown (`sources[i]`).

    The program came from the buffer, so no banned-import check (docs/algorithm.md §5.2).
    """
    if len(proposals) != len(sources):
        raise ValueError(f"{len(proposals)} induction proposals but {len(sources)} source programs")
    statics: list[Validation | None] = []
    runs: list[ProgramRun] = []
    for proposal, source in zip(proposals, sources):
        failure = _static_failure(source.program, proposal.inputs, banned=())
        statics.append(failure)
        if failure is None:
            runs.append(ProgramRun(source.program, proposal.inputs, check_determinism))
    executed = iter(executor.run(runs)) if runs else iter(())
    final: list[Validation] = []
    for proposal, source, static in zip(proposals, sources, statics):
        if static is not None:
            final.append(static)
            continue
        run = next(executed)
        if len(run.calls) != len(proposal.inputs):
            final.append(Validation(None, Reason.RUNTIME_ERROR, "missing results"))
            continue
        calls = [_output_or_failure(call, exception_rule) for call in run.calls]
        failed = next((raw for raw, call in zip(run.calls, calls) if call is None), None)
        if failed is not None:
            final.append(_failure_of(failed))
            continue
        outputs = [_apply_output_policy(call.output, tasks) for call in calls if call is not None]
        rejected = next((o for o in outputs if isinstance(o, Validation)), None)
        if rejected is not None:
            final.append(rejected)
            continue
        final.append(
            Validation(
                InductionTask(
                    program=source.program,
                    inputs=proposal.inputs,
                    outputs=tuple(str(o) for o in outputs),
                    message=proposal.message,
                    imports=source.imports,
                )
            )
        )
    return final
