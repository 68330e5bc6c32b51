"""From a batch of proposer responses to validated tasks and proposer rewards (docs/algorithm.md §5, §7.2).

Parse each response, validate the parsed ones in one executor batch, and keep the format score
apart: a valid program whose think/answer format is broken still enters the buffer, but earns
the format penalty (docs/algorithm.md §7.2, §8.6).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

from azr.config.schema import AZRConfig
from azr.sandbox.api import Executor
from azr.selfplay.parsing import (
    THINK_PREFIX,
    InductionProposal,
    ParseFailure,
    ProgramProposal,
    parse_generation,
    parse_induction_proposal,
    parse_induction_proposal_original,
    parse_program_proposal,
    parse_program_proposal_original,
)
from azr.selfplay.rejection import Reason
from azr.selfplay.task_records import InductionTask, Triplet
from azr.selfplay.rewards import proposer_reward
from azr.selfplay.task_types import TaskType
from azr.selfplay.validation import Validation, validate_induction_proposals, validate_program_proposals


@dataclass(frozen=True)
class ProposalOutcome:
    format_ok: bool
    validation: Validation

    @property
    def task(self) -> Triplet | InductionTask | None:
        """The buffer entry: every valid program, whatever its format (docs/algorithm.md §8.6)."""
        return self.validation.task

    @property
    def label(self) -> str:
        """Why it failed (`runtime_error:TypeError`, `no_def`, ...), `bad_format_but_valid`,
        or '' for a valid, well formatted proposal."""
        if self.validation.task is not None:
            return "" if self.format_ok else Reason.BAD_FORMAT_BUT_VALID.value
        return self.validation.label


def check_proposals(
    task_type: TaskType,
    responses: Sequence[str],
    config: AZRConfig,
    executor: Executor,
    sources: Sequence[Triplet] | None = None,
    prefix: str = THINK_PREFIX,
    seeding: bool = False,
) -> list[ProposalOutcome]:
    """Parse and validate one propose batch, in order.

    `sources[i]` is the program shown to induction proposer i (required for induction);
    `seeding` parses programs with the seeding options (docs/algorithm.md §4.2).
    """
    tasks = config.tasks
    determinism, rule = config.sandbox.check_determinism, config.sandbox.exception_rule
    generations = [parse_generation(r, prefix) for r in responses]
    if task_type is TaskType.INDUCTION and (sources is None or len(sources) != len(responses)):
        raise ValueError("induction proposals need the source program of each prompt")
    parsed = [proposal_reading(task_type, response, generation.answer, config, seeding)
              for response, generation in zip(responses, generations)]
    ok = [i for i, p in enumerate(parsed) if not isinstance(p, ParseFailure)]
    if task_type is TaskType.INDUCTION:
        validated = validate_induction_proposals(
            [parsed[i] for i in ok], [sources[i] for i in ok], executor, tasks, check_determinism=determinism,
            exception_rule=rule,
        )
    else:
        validated = validate_program_proposals([parsed[i] for i in ok], executor, tasks, check_determinism=determinism,
                                               exception_rule=rule)
    by_index = dict(zip(ok, validated))
    outcomes = []
    for i, (generation, item) in enumerate(zip(generations, parsed)):
        if isinstance(item, ParseFailure):
            validation = Validation(None, item.reason, item.detail)
        else:
            validation = by_index[i]
        outcomes.append(ProposalOutcome(generation.format_ok, validation))
    return outcomes


def proposal_reading(
    task_type: TaskType, response: str, answer: str, config: AZRConfig, seeding: bool = False
) -> ProgramProposal | InductionProposal | ParseFailure:
    """One proposal parsed as `tasks.proposal_parsing` says. With `original`, a seeding response
    is read whole, as the original parsed the decoded response (no <answer> needed, a draft
    block inside <think> counts); at self-play only its <answer> content is read."""
    tasks = config.tasks
    original = tasks.proposal_parsing == "original"
    text = response if original and seeding else answer
    if task_type is TaskType.INDUCTION:
        if original:
            return parse_induction_proposal_original(text, tasks.induction_inputs)
        return parse_induction_proposal(text, tasks.induction_inputs)
    options = dict(reject_multiple_functions=tasks.reject_multiple_functions, rename_function=tasks.rename_function,
                   code_location=tasks.code_location, seeding=seeding)
    if original:
        return parse_program_proposal_original(text, **options)
    return parse_program_proposal(text, **options)


def proposal_rewards(
    outcomes: Sequence[ProposalOutcome], solve_rates: Sequence[float | None], config: AZRConfig
) -> list[float]:
    """Proposer rewards; `solve_rates[i]` is None for proposals that had no Monte-Carlo solves."""
    if len(outcomes) != len(solve_rates):
        raise ValueError(f"{len(outcomes)} proposals but {len(solve_rates)} solve rates")
    return [
        proposer_reward(o.task is not None, o.format_ok, rate or 0.0, config.reward)
        for o, rate in zip(outcomes, solve_rates)
    ]
