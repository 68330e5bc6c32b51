"""One self-play iteration, in process and top to bottom: read this first.

`run_iteration` calls the algorithm's steps in the order the paper runs them (docs/algorithm.md):
build the propose and solve prompts from the buffers, propose, validate the proposals in the
sandbox, estimate each valid task's solve rate from Monte-Carlo solves, solve, reward both
roles, whiten the rewards into TRR++ advantages per group, and add the new tasks to the
buffers. It returns the scored responses; the policy update on them (azr/engine/training) is
the caller's. No files, no Prefect, no torch: the policy and the executor come in as Protocols.

The training pipeline (azr/pipeline/stages.py) runs the same steps as stages that read and
write Parquet files, so a run can be resumed and inspected; it shares `stage_seed`,
`mc_prompt_limit` and `trained_advantages` with this file, and the algorithm functions below.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from azr.config.schema import AZRConfig
from azr.sandbox.api import Executor
from azr.selfplay.advantages import trrpp_advantages
from azr.selfplay.buffer import Buffers
from azr.selfplay.iteration_prompts import PromptRecord, TokenCounter, build_iteration_prompts
from azr.selfplay.prompts.chat_format import PromptWrapper
from azr.selfplay.prompts.paper import solve_prompt_for
from azr.selfplay.proposals import ProposalOutcome, check_proposals
from azr.selfplay.rewards import proposer_reward
from azr.selfplay.solution_scoring import estimate_learnability, score_solutions
from azr.selfplay.task_records import InductionTask, Triplet
from azr.selfplay.task_types import TaskType


@dataclass(frozen=True)
class Sample:
    """One sampled response and its length in tokens (TRR++ weighs by it)."""

    text: str
    tokens: int


class Policy(Protocol):
    def sample(self, prompts: Sequence[str], n: int, temperature: float, seed: int) -> list[list[Sample]]:
        """`n` responses to each prompt, in order; the same `seed` gives the same samples."""
        ...


@dataclass(frozen=True)
class ScoredResponse:
    """One response of the iteration's TRR++ batch."""

    group: str
    prompt: str
    response: Sample
    reward: float
    advantage: float
    trained: bool


def stage_seed(seed: int, step: int, stage: str) -> int:
    """A sampling seed per (run seed, iteration, stage): a re-run stage samples the same."""
    return zlib.crc32(f"{seed}:{step}:{stage}".encode()) & 0x7FFFFFFF


def mc_prompt_limit(rollout: Any) -> int:
    """Tokens a Monte-Carlo solve prompt may have (`rollout.mc_prompt_limit`)."""
    return rollout.max_prompt_tokens if rollout.mc_prompt_limit == "max_prompt_tokens" else rollout.content_max_tokens


def trained_advantages(groups: Sequence[str], rewards: Sequence[float], tokens: Sequence[int],
                       trained: Sequence[bool], eps: float) -> list[float]:
    """TRR++ advantages (docs/algorithm.md §9): rewards whitened within each group over the
    trained responses only; 0 for the others."""
    rows = [i for i, keep in enumerate(trained) if keep]
    whitened, _ = trrpp_advantages([groups[i] for i in rows], [rewards[i] for i in rows], [tokens[i] for i in rows], eps)
    advantages = [0.0] * len(groups)
    for i, advantage in zip(rows, whitened):
        advantages[i] = float(advantage)
    return advantages


def _by_type(records: Sequence[PromptRecord]) -> dict[TaskType, list[int]]:
    """The positions of each task type's prompts, in TaskType order (one executor batch each)."""
    return {t: [i for i, r in enumerate(records) if r.group.task_type is t] for t in TaskType
            if any(r.group.task_type is t for r in records)}


def validate(records: Sequence[PromptRecord], responses: Sequence[Sample], config: AZRConfig,
             executor: Executor) -> list[ProposalOutcome]:
    """Parse each proposal and validate its program in the sandbox (docs/algorithm.md §5)."""
    outcomes: list[ProposalOutcome | None] = [None] * len(records)
    for task_type, rows in _by_type(records).items():
        sources = [records[i].references[0] for i in rows] if task_type is TaskType.INDUCTION else None
        found = check_proposals(task_type, [responses[i].text for i in rows], config, executor, sources=sources)
        for i, outcome in zip(rows, found):
            outcomes[i] = outcome
    return [o for o in outcomes if o is not None]


def solve_rates(outcomes: Sequence[ProposalOutcome], records: Sequence[PromptRecord], step: int, config: AZRConfig,
                policy: Policy, executor: Executor, wrapper: PromptWrapper,
                count_tokens: TokenCounter) -> dict[int, float]:
    """The solve rate of each valid task (by position) from `rollout.mc_samples` sampled solves
    (docs/algorithm.md §7.2). A task whose solve prompt is over the limit is left out: its
    proposer gets solve rate 0 and it stays out of the buffers (§5.2, step 4)."""
    rollout, rates = config.rollout, {}
    for task_type, rows in _by_type(records).items():
        valid = [i for i in rows if outcomes[i].task is not None]
        prompts = {i: wrapper.wrap(solve_prompt_for(task_type, outcomes[i].task, config.tasks.prompt_profile)) for i in valid}
        short = [i for i in valid if count_tokens(prompts[i]) <= mc_prompt_limit(rollout)]
        if not short:
            continue
        seed = stage_seed(config.seed, step, f"mc_rollouts:{task_type.value}")
        samples = policy.sample([prompts[i] for i in short], rollout.mc_samples, rollout.mc_temperature, seed)
        texts = [[s.text for s in per_task] for per_task in samples]
        estimates = estimate_learnability(task_type, [outcomes[i].task for i in short], texts, executor, config.reward,
                                          wrapper.response_prefix)
        for i, estimate in zip(short, estimates):
            rates[i] = estimate.solve_rate
    return rates


def run_iteration(buffers: Buffers, step: int, config: AZRConfig, policy: Policy, executor: Executor,
                  wrapper: PromptWrapper, count_tokens: TokenCounter) -> list[ScoredResponse]:
    """One iteration: the scored propose and solve responses (the update's batch); the buffers
    gain this iteration's valid tasks."""
    rollout, reward = config.rollout, config.reward
    # 1. prompts: propose prompts with references from the buffers, solve prompts for last iteration's tasks
    prompts = build_iteration_prompts(buffers, step, config, wrapper, count_tokens)
    # 2. propose: one response per propose prompt
    proposals = [s[0] for s in policy.sample([r.prompt for r in prompts.propose], 1, rollout.temperature,
                                             stage_seed(config.seed, step, "propose"))]
    # 3. validate: parse and run each proposed program in the sandbox
    outcomes = validate(prompts.propose, proposals, config, executor)
    # 4. Monte-Carlo rollouts: how often the current policy solves each valid task
    rates = solve_rates(outcomes, prompts.propose, step, config, policy, executor, wrapper, count_tokens)
    # 5. solve: one response per solve prompt, checked by the executor
    solutions = [s[0] for s in policy.sample([r.prompt for r in prompts.solve], 1, rollout.temperature,
                                             stage_seed(config.seed, step, "solve"))]
    scores: dict[int, float] = {}
    for task_type, rows in _by_type(prompts.solve).items():
        tasks: list[Triplet | InductionTask] = [prompts.solve[i].task for i in rows]  # type: ignore[misc]
        found = score_solutions(task_type, tasks, [solutions[i].text for i in rows], executor, reward,
                                wrapper.response_prefix)
        scores.update({i: outcome.reward for i, outcome in zip(rows, found)})
    # 6. rewards: learnability for proposers (0 for an invalid proposal), correctness for solvers
    batch = [(r.group.name, r.prompt, s, proposer_reward(o.task is not None, o.format_ok, rates.get(i, 0.0), reward),
              config.trainer.train_propose) for i, (r, s, o) in enumerate(zip(prompts.propose, proposals, outcomes))]
    batch += [(r.group.name, r.prompt, s, scores[i], True) for i, (r, s) in enumerate(zip(prompts.solve, solutions))]
    trained = [train and sample.tokens > 0 for _, _, sample, _, train in batch]
    # 7. advantages: TRR++, whitened within each of the six (task type, role) groups
    advantages = trained_advantages([b[0] for b in batch], [b[3] for b in batch], [b[2].tokens for b in batch],
                                    trained, config.trainer.advantage_eps)
    # 8. commit: the valid tasks whose solve prompt fits join the buffers
    new_tasks: dict[TaskType, list[Triplet | InductionTask]] = {t: [] for t in TaskType}
    for i in sorted(rates):  # the valid tasks whose solve prompt fits
        new_tasks[prompts.propose[i].group.task_type].append(outcomes[i].task)
    buffers.add_step(step, new_tasks)
    return [ScoredResponse(group, prompt, sample, score, advantage, keep)
            for (group, prompt, sample, score, _), advantage, keep in zip(batch, advantages, trained)]

