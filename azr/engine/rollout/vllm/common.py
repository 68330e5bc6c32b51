"""What the two vLLM modes share: the sampling request, the completion records, weight files.

vLLM is never imported here: the server mode runs vLLM in another virtual environment, and the
project's own environment need not have it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from azr.pipeline.atomic_io import publish_directory
from azr.engine.rollout.vllm.requests import make_completion, prompt_seed, sampling_fields  # noqa: F401 (their home before)

WEIGHTS_GLOB = "*.safetensors"


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
