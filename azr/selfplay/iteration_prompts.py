"""Building one iteration's prompts from the buffers (docs/algorithm.md §2.1, §8.5, §8.7).

All prompts of an iteration are built at its start, before any generation: propose prompts
sample references from the buffers as they stand, solve prompts take the `max_new` selection
(mostly the previous step's proposals). Over-long propose prompts are resampled; over-long
solve prompts are dropped and the batch is padded with duplicates of the ones kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from azr.selfplay.buffer import Buffers
from azr.config.schema import AZRConfig
from azr.selfplay.prompts.paper import propose_prompt_for, solve_prompt_for
from azr.selfplay.task_records import InductionTask, Triplet
from azr.pipeline.schemas import PROMPT_SCHEMA
from azr.selfplay.task_types import Group, Role, TaskType
from azr.selfplay.prompts.chat_format import PromptWrapper

TokenCounter = Callable[[str], int]


class PromptBuildError(RuntimeError):
    """The buffers and settings cannot produce prompts within the length limit."""


@dataclass(frozen=True)
class PromptRecord:
    """One prompt of the iteration, with what it was built from."""

    group: Group
    index: int
    prompt: str  # the wrapped text the model is fed
    prompt_tokens: int | None
    references: tuple[Triplet, ...] = field(default=())  # propose: references or source program
    task: Triplet | InductionTask | None = None  # solve: the task to solve


@dataclass(frozen=True)
class IterationPrompts:
    step: int
    propose: list[PromptRecord]
    solve: list[PromptRecord]


def _measure(prompt: str, count_tokens: TokenCounter | None) -> int | None:
    return count_tokens(prompt) if count_tokens else None


def _propose_records(
    task_type: TaskType,
    buffers: Buffers,
    config: AZRConfig,
    wrapper: PromptWrapper,
    count_tokens: TokenCounter | None,
) -> list[PromptRecord]:
    group = Group(task_type, Role.PROPOSE)
    limit = config.rollout.content_max_tokens
    records = []
    for index in range(config.rollout.batch_size):
        for _ in range(config.buffer.prompt_resample_tries):
            if task_type is TaskType.INDUCTION:
                references: tuple[Triplet, ...] = (buffers.sample_induction_program(),)
                question = propose_prompt_for(task_type, references[0].program, config.tasks)
            else:
                references = tuple(buffers.sample_references(task_type, config.tasks.references))
                question = propose_prompt_for(task_type, list(references), config.tasks)
            prompt = wrapper.wrap(question)
            tokens = _measure(prompt, count_tokens)
            if tokens is None or tokens <= limit:
                records.append(PromptRecord(group, index, prompt, tokens, references))
                break
        else:
            raise PromptBuildError(
                f"every {group.name} prompt sampled in {config.buffer.prompt_resample_tries} tries "
                f"exceeded rollout.content_max_tokens={limit} tokens; raise that limit (and "
                "rollout.max_prompt_tokens) or lower tasks.references"
            )
    return records


def _solve_records(
    task_type: TaskType,
    step: int,
    buffers: Buffers,
    config: AZRConfig,
    wrapper: PromptWrapper,
    count_tokens: TokenCounter | None,
) -> list[PromptRecord]:
    group = Group(task_type, Role.SOLVE)
    limit = config.rollout.content_max_tokens
    batch_size = config.rollout.batch_size
    kept = []
    for task in buffers.select_solve_batch(task_type, step, batch_size):
        prompt = wrapper.wrap(solve_prompt_for(task_type, task, config.tasks.prompt_profile))
        tokens = _measure(prompt, count_tokens)
        if tokens is None or tokens <= limit:
            kept.append((prompt, tokens, task))
    if not kept:
        raise PromptBuildError(
            f"all {batch_size} selected {group.name} prompts exceed "
            f"rollout.content_max_tokens={limit} tokens; raise that limit"
        )
    while len(kept) < batch_size:
        kept.append(kept[int(buffers.rng.integers(len(kept)))])
    return [PromptRecord(group, i, p, t, task=task) for i, (p, t, task) in enumerate(kept)]


def build_iteration_prompts(
    buffers: Buffers,
    step: int,
    config: AZRConfig,
    wrapper: PromptWrapper,
    count_tokens: TokenCounter | None = None,
) -> IterationPrompts:
    """Every propose and solve prompt of `step`, for the configured task types.

    Task types are visited in the original's order (abduction, deduction, induction), propose
    before solve, so one seed reproduces the same prompts.
    """
    propose, solve = [], []
    for task_type in (t for t in (TaskType.ABDUCTION, TaskType.DEDUCTION, TaskType.INDUCTION) if t in config.tasks.types):
        propose += _propose_records(task_type, buffers, config, wrapper, count_tokens)
        solve += _solve_records(task_type, step, buffers, config, wrapper, count_tokens)
    return IterationPrompts(step, propose, solve)


def tokenizer_counter(tokenizer) -> TokenCounter:  # noqa: ANN001 - any HF tokenizer
    """Count prompt tokens the way generation will see them (no extra special tokens)."""
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _row(step: int, record: PromptRecord) -> dict:
    task = record.task
    return {
        "step": step,
        "group": record.group.name,
        "task_type": record.group.task_type.value,
        "role": record.group.role.value,
        "index": record.index,
        "prompt": record.prompt,
        "prompt_tokens": record.prompt_tokens,
        "references": [{"program": r.program, "input": r.input, "output": r.output} for r in record.references],
        "program": task.program if task else None,
        "input": task.input if isinstance(task, Triplet) else None,
        "output": task.output if isinstance(task, Triplet) else None,
        "inputs": list(task.inputs) if isinstance(task, InductionTask) else None,
        "outputs": list(task.outputs) if isinstance(task, InductionTask) else None,
        "message": task.message if isinstance(task, InductionTask) else None,
    }


def prompts_table(step: int, records: Sequence[PromptRecord]) -> pa.Table:
    return pa.Table.from_pylist([_row(step, r) for r in records], schema=PROMPT_SCHEMA)
