"""Loading the policy model: hub id, local directory, GGUF file, the bundled model, tiny-random.

Precision has two parts. The *compute* dtype (`ModelConfig.dtype`) is what matmuls run in;
`auto` is bf16 on a CUDA device that supports it and on a CPU with native bf16 kernels
(AVX512-BF16 or AMX, not capped by ONEDNN_MAX_CPU_ISA: azr/ops/cpu_features.py; there bf16
generation was ~1.6x faster than fp32), else fp32 (emulated bf16 is ~50x slower on AVX2).
The *parameter* dtype is fp32 for a trained model unless `master_dtype: same`: AdamW at the
paper's lr 1e-6 moves a weight of size 0.05 by ~1e-6, far below bf16's rounding step there
(~2e-4), so pure-bf16 weights would never change. Compute then runs under autocast.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch

from azr.config.schema import BUNDLED_MODEL_ID, TINY_RANDOM_MODEL_ID, ModelConfig
from azr.engine.models.gguf import ensure_converted
from azr.engine.models.sources import resolve_model_source
from azr.engine.models.tokenizer import load_tokenizer
from azr.ops.cpu_features import cpu_dtype_choice

if TYPE_CHECKING:
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

# The bundled tokenizer's vocabulary and special tokens (SmolLM2: <|im_start|>=1, <|im_end|>=2).
BUNDLED_VOCAB_SIZE = 49152
BUNDLED_BOS_ID = 1
BUNDLED_EOS_ID = 2


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 kernels (AVX512-BF16 / AMX) that oneDNN may use: the
    flags and ISA cap (cpu_features) and torch's own check must both say so."""
    if cpu_dtype_choice().dtype != "bfloat16":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def compute_dtype(model_cfg: ModelConfig, device: torch.device | str | None = None) -> torch.dtype:
    """The dtype forward and backward passes run in, for `model_cfg.dtype` on `device`."""
    if model_cfg.dtype != "auto":
        return _DTYPES[model_cfg.dtype]
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu":
        return torch.bfloat16 if cpu_supports_bf16() else torch.float32
    return torch.float32


def parameter_dtype(model_cfg: ModelConfig, compute: torch.dtype, *, for_training: bool) -> torch.dtype:
    """fp32 master weights for training (unless `master_dtype: same`); inference uses `compute`."""
    if for_training and model_cfg.master_dtype == "float32":
        return torch.float32
    return compute


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def load_model(
    model_cfg: ModelConfig,
    device: torch.device | str | None = None,
    *,
    for_training: bool = True,
    seed: int = 0,
    empty: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) for the configured source.

    `for_training` keeps fp32 master weights (see the module docstring) and turns on gradient
    checkpointing when configured; `seed` only matters for `tiny-random`. A GGUF source (the
    bundled model included) is converted once into the cache and loaded from the copy.
    `empty` builds the same architecture on the meta device (no memory, no weights read): the
    engine's ranks other than 0 do that, and receive their weights from rank 0
    (`azr.engine.training.distributed.materialize_from_rank0`).
    """
    compute = compute_dtype(model_cfg, device)
    dtype = parameter_dtype(model_cfg, compute, for_training=for_training)
    if model_cfg.name_or_path == TINY_RANDOM_MODEL_ID:
        tokenizer = load_tokenizer(model_cfg)
        with torch.device("meta") if empty else contextlib.nullcontext():
            model = tiny_model(seed, tokenizer=tokenizer, dtype=dtype)
    elif empty:
        model = _empty_pretrained(model_cfg, dtype)
        tokenizer = load_tokenizer(model_cfg)
    else:
        model = _load_pretrained(model_cfg, dtype)
        tokenizer = load_tokenizer(model_cfg)  # after the conversion, so it reads the copy
    if for_training and model_cfg.gradient_checkpointing:
        enable_activation_checkpointing(model)
    if device is not None:
        model.to(torch.device(device))
    return model, tokenizer


def enable_activation_checkpointing(model: PreTrainedModel) -> None:
    """Recompute each decoder layer in backward (non-reentrant, so it nests with the chunked
    head's checkpoints). transformers 5 renamed gradient_checkpointing_enable; both work."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _load_pretrained(model_cfg: ModelConfig, dtype: torch.dtype) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    source = resolve_model_source(model_cfg.name_or_path, model_cfg.revision)
    if source.gguf_file is not None:
        return AutoModelForCausalLM.from_pretrained(ensure_converted(source), dtype=dtype)
    try:
        return AutoModelForCausalLM.from_pretrained(
            source.path,
            revision=model_cfg.revision,
            trust_remote_code=model_cfg.trust_remote_code,
            dtype=dtype,
            **source.from_pretrained_kwargs(),
        )
    except OSError as exc:
        raise OSError(
            f"cannot load model {model_cfg.name_or_path!r}: {exc}. Use a hub id, a local "
            f"directory with config.json, a .gguf file, {BUNDLED_MODEL_ID!r} or "
            f"{TINY_RANDOM_MODEL_ID!r}"
        ) from exc


def _empty_pretrained(model_cfg: ModelConfig, dtype: torch.dtype) -> PreTrainedModel:
    """The configured model's architecture on the meta device, from its config.json only."""
    from transformers import AutoConfig, AutoModelForCausalLM

    source = resolve_model_source(model_cfg.name_or_path, model_cfg.revision)
    if source.gguf_file is not None:
        location, kwargs = str(ensure_converted(source)), {}
    else:
        location = source.path
        kwargs = {"revision": model_cfg.revision, "trust_remote_code": model_cfg.trust_remote_code,
                  **source.from_pretrained_kwargs()}
    config = AutoConfig.from_pretrained(location, **kwargs)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype,
                                                trust_remote_code=model_cfg.trust_remote_code)


def tiny_config(
    vocab_size: int = BUNDLED_VOCAB_SIZE,
    bos_token_id: int = BUNDLED_BOS_ID,
    eos_token_id: int = BUNDLED_EOS_ID,
    pad_token_id: int = BUNDLED_EOS_ID,
) -> LlamaConfig:
    """A 2-layer Llama (hidden 64) over a full-size vocabulary: the same code paths as a real
    model (tied embeddings, GQA, RoPE), at a cost dominated by the vocabulary."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )


def tiny_model(seed: int = 0, *, tokenizer: PreTrainedTokenizerBase | None = None,
               dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    """A tiny randomly initialised LlamaForCausalLM, identical for the same seed; no download.

    With a tokenizer it takes that tokenizer's vocabulary and special tokens, else the bundled
    tokenizer's. The global torch RNG is left as it was.
    """
    from transformers import LlamaForCausalLM

    if tokenizer is not None:
        eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
        config = tiny_config(len(tokenizer), bos, eos, pad)
    else:
        config = tiny_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.to(dtype)
