"""Loading a tokenizer for prompt building and length filtering."""

from __future__ import annotations

from typing import Any

from azr.config import ModelConfig
from azr.engine.model_source import resolve_tokenizer_source


def load_tokenizer(model: ModelConfig) -> Any:
    """The model's tokenizer (left padding, a pad token), from the hub, a directory or GGUF."""
    from transformers import AutoTokenizer

    source = resolve_tokenizer_source(model.name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(
        source.path,
        revision=model.revision,
        trust_remote_code=model.trust_remote_code,
        **source.from_pretrained_kwargs(),
    )
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
