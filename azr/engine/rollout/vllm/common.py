"""What the two vLLM modes share: the sampling request, the completion records, weight files.

vLLM is never imported here: the server mode runs vLLM in another virtual environment, and the
project's own environment need not have it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from azr.pipeline.atomic_io import publish_directory
from azr.engine.api import Completion, SamplingSettings
from azr.engine.rollout.transformers_backend import completion_record

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

WEIGHTS_GLOB = "*.safetensors"


def sampling_fields(settings: SamplingSettings, eos_token_ids: Sequence[int], *, n: int) -> dict[str, Any]:
    """vLLM sampling parameters equal to the transformers backend's decoding of `settings`.

    Every field is explicit, so neither the checkpoint's generation_config.json nor vLLM's
    defaults (e.g. repetition penalty) change the rollouts. Detokenization is left to the
    caller, which decodes with the run's tokenizer.
    """
    greedy = settings.greedy
    return {
        "n": n,
        "max_tokens": settings.max_new_tokens,
        "temperature": 0.0 if greedy else settings.temperature,
        "top_p": 1.0 if greedy else settings.top_p,
        "top_k": -1 if greedy else settings.top_k,
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "stop_token_ids": list(eos_token_ids),
        "ignore_eos": False,
        "skip_special_tokens": True,
    }


def prompt_seed(seed: int | None, index: int) -> int | None:
    """A seed per prompt, so a call is reproducible whatever the engine's batching and two equal
    prompts in one call still get independent samples. None stays None (not reproducible)."""
    if seed is None:
        return None
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def make_completion(
    token_ids: Sequence[int],
    finish_reason: str | None,
    prompt_token_ids: Sequence[int],
    *,
    eos_token_ids: Sequence[int],
    max_new_tokens: int,
    tokenizer: PreTrainedTokenizerBase,
    logprobs: Sequence[float] | None = None,
) -> Completion:
    """The transformers backend's record of a vLLM output; vLLM's 'abort' (or any reason other
    than a stop token or the length limit) is an error, not an answer."""
    return completion_record(token_ids, prompt_token_ids, eos_token_ids, max_new_tokens, tokenizer,
                             finish_reason=finish_reason or "abort", logprobs=logprobs)


def iter_weights(model: torch.nn.Module, dtype: torch.dtype | None) -> Any:
    """(name, tensor) of the model's state dict in checkpoint names, cast to `dtype`, each tensor
    once (tied weights share storage and are yielded under their first name)."""
    seen: set[tuple[int, int]] = set()
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tensor.numel())
        if tensor.numel() and key in seen:
            continue
        seen.add(key)
        tensor = tensor.detach()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        yield name, tensor


def write_weight_files(model: torch.nn.Module, target: Path, dtype: torch.dtype | None, *, shard_bytes: int = 2 << 30,
                       weights: Iterable[tuple[str, torch.Tensor]] | None = None) -> Path:
    """The model's weights (or the given `weights`, e.g. gathered from shards) as safetensors
    shards in a new directory `target`, written to a temporary name and renamed, so a reader
    never sees half a set."""
    from safetensors.torch import save_file

    target = Path(target)
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    shard: dict[str, torch.Tensor] = {}
    size = index = 0

    def flush() -> None:
        nonlocal shard, size, index
        if shard:
            save_file(shard, str(temp / f"weights-{index:05d}.safetensors"))
            shard, size, index = {}, 0, index + 1

    for name, tensor in (weights if weights is not None else iter_weights(model, dtype)):
        shard[name] = tensor.to("cpu").contiguous()
        size += tensor.numel() * tensor.element_size()
        if size >= shard_bytes:
            flush()
    flush()
    publish_directory(temp, target)
    return target
