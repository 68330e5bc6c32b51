"""Greedy answers to benchmark prompts, in chunks so that a progress bar can follow.

Works with anything that has `generate(prompts, SamplingSettings)`: a generation backend or the
resident training policy. Prompts are sent longest first, so each chunk holds prompts of similar
length and little padding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from azr.engine.api import Completion, SamplingSettings

ProgressCallback = Callable[[int], None]  # called with the number of items just finished


class Generator(Protocol):
    def generate(self, prompts: Sequence[str], settings: SamplingSettings) -> list[list[Completion]]: ...


@dataclass(frozen=True)
class ResponseRecord:
    """One answered prompt, as stored in responses.parquet."""

    id: str
    prompt: str
    response: str
    prompt_tokens: int
    response_tokens: int
    finish_reason: str
    sample: int = 0


def greedy(max_new_tokens: int) -> SamplingSettings:
    """Greedy decoding (temperature 0), as the benchmarks are reported (docs/algorithm.md §11.1)."""
    return SamplingSettings(max_new_tokens=max_new_tokens, temperature=0.0)


def decoding(max_new_tokens: int, samples: int = 1, temperature: float | None = None, seed: int = 0) -> SamplingSettings:
    """Greedy for one sample (the paper); for pass@k, `samples` seeded samples per prompt at
    `temperature` (default 1.0: the model's own distribution)."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if samples == 1 and not temperature:
        return greedy(max_new_tokens)
    return SamplingSettings(max_new_tokens=max_new_tokens, temperature=1.0 if temperature is None else temperature,
                            n=samples, seed=seed)


def answer_prompts(
    generator: Generator,
    ids: Sequence[str],
    prompts: Sequence[str],
    settings: SamplingSettings,
    *,
    chunk_size: int = 64,
    on_progress: ProgressCallback | None = None,
) -> list[ResponseRecord]:
    """`settings.n` completions per prompt (one when greedy), prompt by prompt in the order given."""
    if len(ids) != len(prompts):
        raise ValueError(f"{len(ids)} ids but {len(prompts)} prompts")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    records: list[list[ResponseRecord] | None] = [None] * len(prompts)
    for start in range(0, len(order), chunk_size):
        chunk = order[start : start + chunk_size]
        completions = generator.generate([prompts[i] for i in chunk], settings)
        if len(completions) != len(chunk):
            raise RuntimeError(f"the generator answered {len(completions)} of {len(chunk)} prompts")
        for index, answers in zip(chunk, completions):
            records[index] = [
                ResponseRecord(ids[index], prompts[index], answer.text, len(answer.prompt_token_ids),
                               len(answer.token_ids), answer.finish_reason, sample)
                for sample, answer in enumerate(answers[: settings.n])
            ]
        if on_progress is not None:
            on_progress(len(chunk))
    return [record for group in records if group is not None for record in group]
