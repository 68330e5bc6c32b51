"""Architecture facts of a causal LM: what the memory planner needs, without loading the model.

The preset models' facts ship here (their published config.json values), because a planner
that must reach the hub fails exactly where it is needed: on a GPU box before the first
download, or offline. Other models are read from a local config.json (a directory, or the
Hugging Face cache for a hub id that was downloaded before). Nothing here imports torch or
transformers, so `azr plan` answers in well under a second.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from azr.config.schema import BUNDLED_MODEL_ID, TINY_RANDOM_MODEL_ID


class ModelFactsError(ValueError):
    """The model's architecture cannot be found; the message says where it was looked for."""


@dataclass(frozen=True)
class ModelFacts:
    """A decoder-only transformer with grouped-query attention and a gated (SwiGLU) MLP."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool
    head_dim: int = 0  # 0: hidden // heads (most configs leave it out)
    qkv_bias: bool = False  # Qwen2 has biases on q, k and v; Llama has none
    published_parameters: int | None = None  # the model card's count, for cross-checks

    def __post_init__(self) -> None:
        if self.head_dim == 0:
            object.__setattr__(self, "head_dim", self.hidden // self.heads)

    @property
    def kv_dim(self) -> int:
        """Width of the key (and of the value) projection."""
        return self.kv_heads * self.head_dim

    def layer_parameters(self) -> int:
        """One decoder layer: attention projections, the gated MLP, two RMSNorm weights."""
        q = self.hidden * self.heads * self.head_dim
        kv = 2 * self.hidden * self.kv_dim
        o = self.heads * self.head_dim * self.hidden
        bias = (self.heads * self.head_dim + 2 * self.kv_dim) if self.qkv_bias else 0
        mlp = 3 * self.hidden * self.intermediate
        return q + kv + o + bias + mlp + 2 * self.hidden

    def outer_parameters(self) -> int:
        """Everything outside the layers: embeddings, LM head (unless tied), final norm."""
        embeddings = self.vocab * self.hidden
        return embeddings * (1 if self.tied_embeddings else 2) + self.hidden

    def parameters(self) -> int:
        return self.layers * self.layer_parameters() + self.outer_parameters()


def _qwen2(name: str, layers: int, hidden: int, intermediate: int, heads: int, kv_heads: int,
           vocab: int, tied: bool, published: int) -> ModelFacts:
    return ModelFacts(name, layers, hidden, intermediate, heads, kv_heads, vocab, tied,
                      qkv_bias=True, published_parameters=published)


# Published config.json values (checked against the model repositories' files).
KNOWN_MODELS: dict[str, ModelFacts] = {
    facts.name: facts
    for facts in (
        _qwen2("Qwen/Qwen2.5-Coder-3B", 36, 2048, 11008, 16, 2, 151936, True, 3_090_000_000),
        _qwen2("Qwen/Qwen2.5-Coder-7B", 28, 3584, 18944, 28, 4, 152064, False, 7_610_000_000),
        _qwen2("Qwen/Qwen2.5-Coder-14B", 48, 5120, 13824, 40, 8, 152064, False, 14_700_000_000),
        _qwen2("Qwen/Qwen2.5-7B", 28, 3584, 18944, 28, 4, 152064, False, 7_610_000_000),
        _qwen2("Qwen/Qwen2.5-14B", 48, 5120, 13824, 40, 8, 152064, False, 14_700_000_000),
        ModelFacts("meta-llama/Llama-3.1-8B", 32, 4096, 14336, 32, 8, 128256, False,
                   published_parameters=8_030_000_000),
        # SmolLM2-135M-Instruct, the bundled GGUF model (a Llama; 134.5M parameters loaded).
        ModelFacts(BUNDLED_MODEL_ID, 30, 576, 1536, 9, 3, 49152, True, published_parameters=134_515_008),
        # azr.engine.models.loading.tiny_config(): 2 layers of width 64 over the bundled vocabulary.
        ModelFacts(TINY_RANDOM_MODEL_ID, 2, 64, 128, 4, 2, 49152, True),
    )
}
# The Instruct variants share their base model's architecture.
for _base in list(KNOWN_MODELS):
    if _base.startswith("Qwen/") or _base.startswith("meta-llama/"):
        KNOWN_MODELS[f"{_base}-Instruct"] = replace(KNOWN_MODELS[_base], name=f"{_base}-Instruct")


def facts_from_config(config: dict[str, Any], name: str) -> ModelFacts:
    """Facts from a Hugging Face config.json mapping (a nested `text_config` is used if present)."""
    if "text_config" in config and "hidden_size" not in config:
        config = config["text_config"]
    required = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")
    missing = [key for key in required if not isinstance(config.get(key), int)]
    if missing:
        raise ModelFactsError(
            f"the config.json of {name} lacks {', '.join(missing)}; the memory planner handles "
            "decoder-only transformers with these fields (Llama, Qwen2, Mistral and the like)"
        )
    heads = config["num_attention_heads"]
    model_type = str(config.get("model_type", ""))
    return ModelFacts(
        name=name,
        layers=config["num_hidden_layers"],
        hidden=config["hidden_size"],
        intermediate=config["intermediate_size"],
        heads=heads,
        kv_heads=int(config.get("num_key_value_heads") or heads),
        vocab=config["vocab_size"],
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        head_dim=int(config.get("head_dim") or 0),
        qkv_bias=bool(config.get("attention_bias", model_type == "qwen2")),
    )


def _read_config_json(path: Path, name: str) -> ModelFacts:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFactsError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelFactsError(f"{path} is not a JSON object")
    return facts_from_config(data, name)


def _cached_hub_config(repo_id: str, revision: str | None) -> Path | None:
    """config.json of a hub model already in the local Hugging Face cache; never downloads."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except ValueError:  # not a valid repo id
        return None
    return Path(found) if isinstance(found, str) else None


def model_facts(name_or_path: str, revision: str | None = None) -> ModelFacts:
    """The architecture of `model.name_or_path`: shipped facts, a local config.json, or the
    hub cache. Raises ModelFactsError naming what to do when none of them has it."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return _read_config_json(path / "config.json", name_or_path)
        raise ModelFactsError(f"{path} is a directory without config.json; point model.name_or_path "
                              "at a Hugging Face model directory")
    if name_or_path in KNOWN_MODELS:
        return KNOWN_MODELS[name_or_path]
    if path.suffix == ".gguf":
        raise ModelFactsError(
            f"cannot plan {name_or_path}: a GGUF file carries no config.json here; plan a model "
            "directory with the same architecture (its config.json) instead"
        )
    cached = _cached_hub_config(name_or_path, revision)
    if cached is not None:
        return _read_config_json(cached, name_or_path)
    known = ", ".join(sorted(k for k in KNOWN_MODELS if not k.endswith("-Instruct")))
    raise ModelFactsError(
        f"no architecture facts for {name_or_path!r}: it is not a local directory, not a model "
        f"whose facts ship with azr ({known}), and its config.json is not in the local Hugging "
        f"Face cache (the planner never downloads). Download it first (`hf download {name_or_path} "
        f"config.json`), or set model.name_or_path to a local model directory"
    )
