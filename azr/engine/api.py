"""The policy boundary: what the pipeline asks of a policy and what comes back.

The pipeline holds a `PolicyHandle`: the controller's `EngineClient` in a run, an in-process
`Policy` in tests and benchmarks. Requests and results are frozen dataclasses of plain values,
so they cross the controller-engine socket as JSON and the Parquet exchange files unchanged.
This module imports no torch: the controller reads it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal, Protocol

from pydantic import JsonValue

from azr.config.schema import RolloutConfig
from azr.pipeline.atomic_io import PathLike
from azr.selfplay.task_types import GROUP_NAMES

FinishReason = Literal["stop", "length"]
EXPORT_DIR = "export"  # a checkpoint's Hugging Face export, inside its directory


@dataclass(frozen=True)
class SamplingSettings:
    """How to decode. temperature 0 is greedy; top_k -1 and top_p 1.0 are off."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    n: int = 1
    seed: int | None = None  # None: the global torch RNG, not reproducible

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < -1 or self.top_k == 0:
            raise ValueError(f"top_k must be -1 (off) or >= 1, got {self.top_k}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @classmethod
    def from_rollout(
        cls,
        rollout: RolloutConfig,
        *,
        n: int = 1,
        temperature: float | None = None,
        seed: int | None = None,
    ) -> SamplingSettings:
        """Propose/solve sampling of the run config; `seed` overrides `rollout.seed`."""
        return cls(
            max_new_tokens=rollout.max_new_tokens,
            temperature=rollout.temperature if temperature is None else temperature,
            top_p=rollout.top_p,
            top_k=rollout.top_k,
            n=n,
            seed=rollout.seed if seed is None else seed,
        )

    @classmethod
    def monte_carlo(cls, rollout: RolloutConfig, *, seed: int | None = None) -> SamplingSettings:
        """`mc_samples` solves per proposal at `mc_temperature` (sampled, docs/algorithm.md §10.4)."""
        return cls.from_rollout(rollout, n=rollout.mc_samples, temperature=rollout.mc_temperature, seed=seed)


@dataclass(frozen=True)
class Completion:
    """One sampled response.

    `token_ids` are the response tokens without padding, ending with the EOS token when
    `finish_reason` is 'stop'; 'length' means it was cut at max_new_tokens. `text` is decoded
    without special tokens. `logprobs` are the behaviour log-probs the engine gave each token
    of `token_ids` (the raw, temperature-1 distribution of the weights that sampled it: what the
    trainer computes, docs/algorithm.md §11); None where the engine did not record them.
    """

    text: str
    token_ids: tuple[int, ...]
    prompt_token_ids: tuple[int, ...]
    finish_reason: FinishReason
    logprobs: tuple[float, ...] | None = None


PromptCompletions = list[list[Completion]]  # per prompt, its `settings.n` samples
"""What one request gets back: for each of its prompts, in prompt order, its samples."""


@dataclass(frozen=True)
class GenerationRequest:
    """Prompts that share sampling settings: one part of a merged generate call.

    A request samples the same whether it is sent alone or merged with others: a sample's
    random stream is keyed by (settings.seed, its prompt's index in the request, its sample
    number), never by its position in the call (`azr.engine.rollout.row_sampling.sample_seed`).
    """

    prompts: tuple[str, ...]
    settings: SamplingSettings

    def __post_init__(self) -> None:
        if isinstance(self.prompts, str):
            raise TypeError("prompts must be a sequence of strings, not one string")
        object.__setattr__(self, "prompts", tuple(self.prompts))


class Generator(Protocol):
    """Anything that samples completions: a policy, the engine client, a rollout backend."""

    def generate_many(self, requests: Sequence[GenerationRequest]) -> list[PromptCompletions]:
        """The completions of each request, in request order, decoded in one call (fuller
        batches); each request gets what it would get alone."""
        ...

    def generate(self, prompts: Sequence[str], settings: SamplingSettings) -> PromptCompletions:
        """`settings.n` completions for each prompt, in prompt order: one request."""
        ...


class RequestGenerator(ABC):
    """A `Generator` that implements `generate_many`; `generate` is its one-request case."""

    @abstractmethod
    def generate_many(self, requests: Sequence[GenerationRequest]) -> list[PromptCompletions]:
        ...

    def generate(self, prompts: Sequence[str], settings: SamplingSettings) -> PromptCompletions:
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not one string")
        return self.generate_many([GenerationRequest(tuple(prompts), settings)])[0]


@dataclass(frozen=True)
class TrainSequence:
    """One trained response: its prompt, group, advantage (constant over its tokens, from
    `azr.selfplay.advantages`), when given the old per-token log-probs of the PPO ratio, and
    when the rollout engine recorded them the behaviour log-probs of its tokens."""

    prompt_ids: Sequence[int]
    response_ids: Sequence[int]
    group: str
    advantage: float
    old_logprobs: Sequence[float] | None = None
    behaviour_logprobs: Sequence[float] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt_ids", tuple(int(i) for i in self.prompt_ids))
        object.__setattr__(self, "response_ids", tuple(int(i) for i in self.response_ids))
        object.__setattr__(self, "advantage", float(self.advantage))
        if not self.prompt_ids:
            raise ValueError("a trained sequence needs a non-empty prompt (it predicts the first response token)")
        if not self.response_ids:
            raise ValueError("a trained sequence needs at least one response token")
        if self.group not in GROUP_NAMES:
            raise ValueError(f"unknown group {self.group!r}; groups are: {', '.join(GROUP_NAMES)}")
        if not math.isfinite(self.advantage):
            raise ValueError(f"advantage must be finite, got {self.advantage}")
        for name, given in (("old_logprobs", self.old_logprobs), ("behaviour_logprobs", self.behaviour_logprobs)):
            if given is not None:
                values = tuple(float(x) for x in given)
                if len(values) != len(self.response_ids):
                    raise ValueError(f"{name} has {len(values)} values for {len(self.response_ids)} response tokens")
                object.__setattr__(self, name, values)


@dataclass(frozen=True)
class GroupMetrics:
    sequences: int
    tokens: int
    pg_loss: float  # token-mean inside the group
    entropy: float


@dataclass(frozen=True)
class UpdateMetrics:
    """What one update did; `as_dict()` is JSON-ready (update.json)."""

    loss: float
    pg_loss: float
    entropy: float  # per-group token-mean, averaged over groups (the loss's weighting)
    kl: float | None  # same weighting; None when no reference model
    grad_norm: float  # before clipping
    clip_frac: float  # share of all response tokens whose ratio was clipped
    tokens: int
    sequences: int
    seconds: float
    tokens_per_second: float
    learning_rate: float
    skipped: bool  # a non-finite gradient norm: no optimizer step was taken
    groups: dict[str, GroupMetrics] = field(default_factory=dict)
    world_size: int = 1  # engine ranks the batch was split over
    strategy: str = "ddp"  # trainer.strategy: ddp, fsdp or zero3 (nothing is wrapped on one rank)
    off_policy: dict[str, float] = field(default_factory=dict)  # the gap to the rollout engine (off_policy.py)

    def as_dict(self) -> dict[str, JsonValue]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: Mapping[str, JsonValue]) -> UpdateMetrics:
        """The metrics of an update.json record (the engine's reply); other keys are ignored."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.items() if k in names}
        groups = values.pop("groups", None) or {}
        if not isinstance(groups, dict):
            raise ValueError(f"an update record's groups must be an object, got {type(groups).__name__}")
        return cls(**values, groups={g: GroupMetrics(**m) for g, m in groups.items()})  # type: ignore[arg-type]


@dataclass(frozen=True)
class CheckpointInfo:
    """A complete checkpoint: its directory, step and the caller's metadata."""

    path: Path
    step: int
    metadata: dict[str, JsonValue] = field(default_factory=dict)

    @property
    def export_dir(self) -> Path:
        return self.path / EXPORT_DIR


class PolicyHandle(Generator, Protocol):
    """What the pipeline asks of the policy. Every call is collective on the engine's ranks
    (`azr.engine.rank.policy`): each rank runs it, in the same order, with the same values."""

    @property
    def world_size(self) -> int:
        """Engine ranks the update is split over."""
        ...

    @property
    def strategy(self) -> str:
        """trainer.strategy: ddp, fsdp or zero3."""
        ...

    def update(self, sequences: Sequence[TrainSequence]) -> UpdateMetrics:
        """One TRR++ optimizer step on these sequences."""
        ...

    def update_scored(self, scored: PathLike) -> dict[str, JsonValue]:
        """One TRR++ step on the trained rows of a scored.parquet: update.json's record."""
        ...

    def sync_rollout_weights(self) -> float | None:
        """Give a separate rollout engine the current weights; seconds taken, None if not due."""
        ...

    def save_checkpoint(self, root: PathLike, step: int, metadata: Mapping[str, JsonValue] | None = None) -> Path:
        ...

    def load_checkpoint(self, path: PathLike) -> CheckpointInfo:
        ...

    def resume(self, root: PathLike) -> CheckpointInfo | None:
        """Load the newest complete checkpoint under `root`, if any."""
        ...

    def close(self) -> None:
        ...
