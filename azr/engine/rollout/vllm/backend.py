"""vLLM behind the `GenerationBackend` interface: what both modes share, and the server mode.

`VLLMServerBackend` talks to a `vllm serve` process (started by the run, or at `url`): prompts go
as token ids, completions come back as token ids, and after every update the policy's weights
are written as safetensors and loaded in place by the server's workers. The colocate mode
(`azr.engine.rollout.vllm.hybrid.VLLMColocateBackend`) holds a `vllm.LLM` in every engine rank and
streams the weights into it without touching the disk. Both give the transformers backend's
records (text, token ids, finish reason) for the same `SamplingSettings`; a sync always runs
under a time limit.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import threading
from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from azr.pipeline.atomic_io import publish_directory
from azr.config.schema import AZRConfig
from azr.engine.api import GenerationRequest, PromptCompletions, RequestGenerator, SamplingSettings
from azr.engine.rollout.transformers_backend import model_eos_ids
from azr.engine.rollout.vllm.common import iter_weights, write_weight_files
from azr.engine.rollout.vllm.requests import RawOutput, complete_requests, post_completions, request_fields
from azr.engine.rollout.vllm.server import SERVED_MODEL_NAME, VLLMClient, VLLMError, VLLMServer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_T = TypeVar("_T")

_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


class _VLLMBackend(RequestGenerator):
    """Tokenizing, greedy de-duplication and completion records; subclasses run the engine
    (a `GenerationBackend` that holds a copy of the weights)."""

    separate_weights = True
    weights_discarded = False

    def __init__(self, tokenizer: PreTrainedTokenizerBase, eos_token_ids: Sequence[int]) -> None:
        if not eos_token_ids:
            raise ValueError("the tokenizer and the model's generation config define no EOS token")
        self.tokenizer = tokenizer
        self.eos_token_ids = tuple(eos_token_ids)

    def prepare_for_update(self) -> None:
        """A server on GPUs of its own needs nothing freed (the colocated engine sleeps)."""

    @abstractmethod
    def sync_weights(self, model: torch.nn.Module) -> None:
        """Load the trained model's current weights into vLLM."""

    @abstractmethod
    def close(self) -> None:
        """Stop the engine (idempotent)."""

    def generate_many(self, requests: Sequence[GenerationRequest]) -> list[PromptCompletions]:
        """The prompts of all requests in one engine call, each with its request's sampling; a
        prompt's seed is keyed by its index in its own request, so merging moves no sample."""
        return complete_requests(self.tokenizer, self.eos_token_ids, requests, self._generate_ids)

    def _request(self, settings: SamplingSettings, n: int, index: int) -> dict[str, Any]:
        """Prompt `index`'s sampling fields (`requests.request_fields`)."""
        return request_fields(settings, self.eos_token_ids, n, index)

    @abstractmethod
    def _generate_ids(self, prompts: list[list[int]], requests: list[dict[str, Any]]) -> list[list[RawOutput]]:
        """(token ids, finish reason, log-probs) x `requests[i]["n"]` for prompt i, in prompt
        order, from the engine; `requests[i]` are prompt i's sampling fields (`_request`)."""


class VLLMServerBackend(_VLLMBackend):
    """Generation through a vLLM server's completions endpoint; weights synced through files."""

    def __init__(self, client: VLLMClient, tokenizer: PreTrainedTokenizerBase, eos_token_ids: Sequence[int], *,
                 weights_root: Path,
                 dtype: torch.dtype, request_timeout_s: float, sync_timeout_s: float,
                 max_concurrent_requests: int = 256, server: VLLMServer | None = None,
                 model_name: str = SERVED_MODEL_NAME) -> None:
        super().__init__(tokenizer, eos_token_ids)
        self.client = client
        self.server = server
        self.weights_root = Path(weights_root)
        self.dtype = dtype
        self.request_timeout_s = request_timeout_s
        self.sync_timeout_s = sync_timeout_s
        self.max_concurrent_requests = max_concurrent_requests
        self.model_name = model_name
        self.syncs = 0
        self._current_weights: Path | None = None

    @classmethod
    def start(cls, config: AZRConfig, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
              work_dir: Path, dtype: torch.dtype) -> VLLMServerBackend:
        """Export the policy, start (or reach) the server, and wait until it answers."""
        settings = config.rollout.vllm
        work_dir = Path(work_dir)
        eos = model_eos_ids(model, tokenizer)
        if settings.url:
            client = VLLMClient(settings.url)
            if not client.healthy(timeout=10.0):
                raise VLLMError(f"no healthy vLLM server at rollout.vllm.url={settings.url!r} (GET /health failed)")
            server = None
        else:
            model_dir = export_model_dir(model, tokenizer, work_dir / "model", dtype)
            server = VLLMServer(
                model_dir, work_dir, settings, dtype=_DTYPE_NAMES[dtype], max_model_len=max_model_len(config),
                seed=engine_seed(config),
                tensor_parallel_size=config.rollout.tensor_parallel_size,
                gpu_memory_utilization=config.rollout.gpu_memory_utilization,
                max_num_batched_tokens=config.rollout.max_num_batched_tokens,
            ).start()
            client = server.client
        models = (client.get("/v1/models", timeout=30.0) or {}).get("data") or []
        name = models[0]["id"] if models else SERVED_MODEL_NAME
        backend = cls(client, tokenizer, eos, weights_root=work_dir / "weights", dtype=dtype,
                      request_timeout_s=settings.request_timeout_s, sync_timeout_s=settings.sync_timeout_s,
                      max_concurrent_requests=settings.max_concurrent_requests, server=server, model_name=name)
        if server is None:
            backend.sync_weights(model)  # an outside server may hold any weights: load the policy's
        return backend

    def _generate_ids(self, prompts: list[list[int]], requests: list[dict[str, Any]]) -> list[list[RawOutput]]:
        if self.server is not None:
            self.server.check_alive()

        return post_completions([self.client], self.model_name, prompts, requests,
                                timeout_s=self.request_timeout_s, concurrency=self.max_concurrent_requests)

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Write the weights, have every worker load them in place, drop cached prefixes."""
        self.syncs += 1
        target = write_weight_files(model, self.weights_root / f"sync-{self.syncs:06d}", self.dtype)
        try:
            self.client.post(
                "/collective_rpc",
                {"method": "azr_load_weights", "args": [str(target.resolve())], "timeout": self.sync_timeout_s},
                timeout=self.sync_timeout_s + 10,
            )
        except VLLMError as exc:
            if "azr_load_weights" in str(exc) and self.server is None:
                raise VLLMError(
                    f"{exc}\nThe server at {self.client.base_url} cannot load weights: start it with "
                    "VLLM_SERVER_DEV_MODE=1 and --worker-extension-cls azr_vllm_extension.AZRWorkerExtension "
                    "(azr/engine/rollout/vllm/extension.py on its PYTHONPATH, saved as azr_vllm_extension.py)"
                ) from exc
            raise
        self.client.reset_prefix_cache(self.sync_timeout_s)
        if self._current_weights is not None and self._current_weights != target:
            shutil.rmtree(self._current_weights, ignore_errors=True)
        self._current_weights = target

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self._current_weights is not None:
            shutil.rmtree(self._current_weights, ignore_errors=True)
            self._current_weights = None


def output_logprobs(output: Any) -> list[float] | None:
    """The sampled tokens' log-probs of a `vllm.CompletionOutput` (None if it has none)."""
    found = getattr(output, "logprobs", None)
    if not found:
        return None
    return [float(position[token].logprob) for token, position in zip(output.token_ids, found)]


def export_model_dir(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, target: Path,
                     dtype: torch.dtype) -> Path:
    """The policy as a transformers directory (config, tokenizer, weights) that vLLM loads at
    start; written to a temporary name and renamed."""
    from azr.engine.training.checkpoints import export_pretrained

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        export_pretrained(model, tokenizer, dict(iter_weights(model, None)), temp, dtype)
        publish_directory(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return target


def max_model_len(config: AZRConfig) -> int:
    rollout = config.rollout
    return rollout.vllm.max_model_len or rollout.max_prompt_tokens + rollout.max_new_tokens


def engine_seed(config: AZRConfig) -> int:
    """The engine's default seed: `rollout.seed`, else the run's `seed`."""
    return config.rollout.seed if config.rollout.seed is not None else config.seed


def run_with_timeout(function: Callable[[], _T], timeout: float, what: str) -> _T:
    """Run `function` in a helper thread; a VLLMError if it has not finished after `timeout`.

    CUDA's current device is per thread and a new thread starts on cuda:0, so the helper takes
    the caller's device first: otherwise on ranks > 0 vLLM's synchronize and the gathered
    weights would go to GPU 0 (issue 22, item 4)."""
    result: dict[str, Any] = {}
    device = torch.cuda.current_device() if torch.cuda.is_available() and torch.cuda.is_initialized() else None

    def target() -> None:
        try:
            if device is not None:
                torch.cuda.set_device(device)
            result["value"] = function()
        except BaseException as exc:  # handed to the caller below
            result["error"] = exc

    thread = threading.Thread(target=target, name="vllm-sync", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise VLLMError(f"{what} did not finish within {timeout:g} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


def resolve_mode(mode: str) -> str:
    """`auto` is colocate where vLLM can be imported here, else server (its own environment)."""
    if mode != "auto":
        return mode
    return "colocate" if importlib.util.find_spec("vllm") is not None else "server"


def create_vllm_backend(config: AZRConfig, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, work_dir: Path,
                        dtype: torch.dtype) -> _VLLMBackend:
    """The configured vLLM mode, started and holding `model`'s current weights."""
    if resolve_mode(config.rollout.vllm.mode) == "server":
        return VLLMServerBackend.start(config, model, tokenizer, work_dir, dtype)
    from azr.engine.rollout.vllm.hybrid import VLLMColocateBackend

    return VLLMColocateBackend.start(config, model, tokenizer, work_dir, dtype)
