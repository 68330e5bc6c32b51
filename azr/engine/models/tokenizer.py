"""Loading a tokenizer for prompt building, length filtering and generation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from azr.config.schema import ModelConfig
from azr.engine.models.gguf import find_converted, require_gguf_package
from azr.engine.models.sources import resolve_tokenizer_source

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def load_tokenizer(model: ModelConfig) -> PreTrainedTokenizerBase:
    """The model's tokenizer (left padding, a pad token), from the hub, a directory or GGUF.

    A GGUF source reads from its converted safetensors copy when one exists (0.1 s instead of
    5 s); otherwise from the GGUF file itself, so building prompts never triggers a conversion.
    """
    from transformers import AutoTokenizer

    source = resolve_tokenizer_source(model.name_or_path, model.revision)
    converted = find_converted(source)
    if converted is not None:
        tokenizer = AutoTokenizer.from_pretrained(converted)
    else:
        if source.gguf_file is not None:
            require_gguf_package()
        tokenizer = AutoTokenizer.from_pretrained(
            source.path,
            revision=model.revision,
            trust_remote_code=model.trust_remote_code,
            **source.from_pretrained_kwargs(),
        )
    return prepare_tokenizer(tokenizer)


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Left padding (generation appends on the right) and a pad token (eos when none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
