"""The vLLM server mode on an engine of any rank count: dedicated servers, weights from the shards.

Rank 0 starts the servers (one, or `rollout.vllm.servers` data-parallel ones, each on its share
of `rollout.gpus`), sends every prompt to one of them (prompt i to server i mod K; each prompt
carries its own seed, so the completions do not depend on K) and broadcasts the completions to
the other ranks, so every rank returns the same value (the Policy contract). After an update
every rank walks the weights together (FSDP2 / ZeRO-3 gathers, parameter by parameter) and rank
0 sends them: through vLLM's native weight-transfer API (`azr.engine.rollout.vllm.weight_transfer`, NCCL or
gloo), or as safetensors files that the servers load in place (the fallback, and the only way
into a server at `rollout.vllm.url`).

A failure on rank 0 (a server that died, a timeout) reaches every rank as a VLLMError instead
of leaving them waiting in a collective.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from azr.pipeline.atomic_io import publish_directory
from azr.config.schema import AZRConfig, vllm_memory_share
from azr.engine.training.distributed import broadcast_object, full_parameters, world
from azr.engine.api import GenerationRequest, PromptCompletions
from azr.engine.rollout.transformers_backend import model_eos_ids
from azr.engine.controller.launch import server_gpu_shares
from azr.engine.rollout.vllm.backend import _DTYPE_NAMES, _VLLMBackend, engine_seed, max_model_len
from azr.engine.rollout.vllm.requests import RawOutput, post_completions
from azr.engine.rollout.vllm.common import write_weight_files
from azr.engine.rollout.vllm.server import SERVED_MODEL_NAME, VLLMClient, VLLMError, VLLMServer, check_server_version
from azr.engine.rollout.vllm.weight_transfer import GLOO_BACKEND, NativeWeightTransfer, choose_transfer, make_channel

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_T = TypeVar("_T")
_SERVER_BACKENDS = {"nccl": "nccl", "gloo": GLOO_BACKEND, "files": None}


def server_count(config: AZRConfig) -> int:
    """Data-parallel servers: rollout.vllm.servers, else rollout.gpus / tensor_parallel_size."""
    rollout = config.rollout
    return rollout.vllm.servers or max(1, rollout.gpus // rollout.tensor_parallel_size)


class DedicatedServerBackend(_VLLMBackend):
    """Generation on vLLM servers of their own; built on every rank by `start`."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, eos_token_ids: Sequence[int], *,
                 clients: Sequence[VLLMClient],
                 servers: Sequence[VLLMServer], transfer: NativeWeightTransfer | None, transfer_kind: str,
                 weights_root: Path, dtype: torch.dtype, config: AZRConfig, model_name: str, is_sender: bool) -> None:
        super().__init__(tokenizer, eos_token_ids)
        self.clients = list(clients)
        self.servers = list(servers)
        self.transfer = transfer
        self.transfer_kind = transfer_kind  # nccl, gloo or files
        self.weights_root = Path(weights_root)
        self.dtype = dtype
        self.settings = config.rollout.vllm
        self.model_name = model_name
        self.is_sender = is_sender
        self.syncs = 0
        self._current_weights: Path | None = None

    @property
    def server(self) -> VLLMServer | None:
        """The first server this rank started (None on other ranks and with rollout.vllm.url)."""
        return self.servers[0] if self.servers else None

    @property
    def client(self) -> VLLMClient | None:
        return self.clients[0] if self.clients else None

    # -------------------------------------------------------------------- start

    @classmethod
    def start(cls, config: AZRConfig, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
              work_dir: Path, dtype: torch.dtype) -> DedicatedServerBackend:
        """Collective: export the weights (gathered), start the servers and the transfer on rank
        0, and hand every rank the outcome."""
        rank, _ = world()
        settings = config.rollout.vllm
        work_dir = Path(work_dir)
        kind = _on_rank0(lambda: choose_transfer(settings.weight_transfer, external=bool(settings.url),
                                                 own_gpus=config.rollout.gpus > 0))
        model_dir = None if settings.url else _export(model, tokenizer, work_dir / "model", dtype, rank == 0)
        backend_args = dict(tokenizer=tokenizer, eos_token_ids=model_eos_ids(model, tokenizer), transfer_kind=kind,
                            weights_root=work_dir / "weights", dtype=dtype, config=config, is_sender=rank == 0)
        started = _on_rank0(lambda: cls._start_rank0(config, model_dir, work_dir, kind, backend_args), share=False)
        if rank == 0:
            backend = started
        else:
            transfer = None if kind == "files" else NativeWeightTransfer(
                None, [], workers_per_server=config.rollout.tensor_parallel_size,
                timeout_s=settings.sync_timeout_s, is_sender=False)
            backend = cls(clients=[], servers=[], transfer=transfer, model_name=SERVED_MODEL_NAME, **backend_args)
        if settings.url:
            backend.sync_weights(model)  # an outside server may hold any weights: load the policy's
        return backend

    @classmethod
    def _start_rank0(cls, config: AZRConfig, model_dir: Path | None, work_dir: Path, kind: str,
                     backend_args: dict[str, Any]) -> DedicatedServerBackend:
        settings = config.rollout.vllm
        servers: list[VLLMServer] = []
        try:
            if settings.url:
                clients = [VLLMClient(settings.url)]
                if not clients[0].healthy(timeout=10.0):
                    raise VLLMError(f"no healthy vLLM server at rollout.vllm.url={settings.url!r} (GET /health failed)")
                check_server_version(clients[0], "rollout.vllm.url")
            else:
                assert model_dir is not None
                servers = _start_servers(config, model_dir, work_dir, _SERVER_BACKENDS[kind], backend_args["dtype"])
                clients = [server.client for server in servers]
            models = (clients[0].get("/v1/models", timeout=30.0) or {}).get("data") or []
            name = models[0]["id"] if models else SERVED_MODEL_NAME
            transfer = None
            if kind != "files":
                channel = make_channel(kind, settings.host, settings.sync_timeout_s)
                transfer = NativeWeightTransfer(channel, clients, workers_per_server=config.rollout.tensor_parallel_size,
                                                timeout_s=settings.sync_timeout_s, is_sender=True)
                transfer.connect()
            return cls(clients=clients, servers=servers, transfer=transfer, model_name=name, **backend_args)
        except BaseException:
            for server in servers:
                server.stop()
            raise

    # -------------------------------------------------------------------- generation

    def generate_many(self, requests: Sequence[GenerationRequest]) -> list[PromptCompletions]:
        """Rank 0 asks the servers (all requests in one call); every rank returns the completions."""
        return _on_rank0(lambda: super(DedicatedServerBackend, self).generate_many(requests))

    def _generate_ids(self, prompts: list[list[int]], requests: list[dict[str, Any]]) -> list[list[RawOutput]]:
        for server in self.servers:
            server.check_alive()

        return post_completions(self.clients, self.model_name, prompts, requests,
                                timeout_s=self.settings.request_timeout_s,
                                concurrency=self.settings.max_concurrent_requests)

    def endpoint(self) -> dict[str, Any] | None:
        """Where the controller reaches these servers directly (one-step-off generation,
        azr.engine.controller.direct_rollout); None on the ranks that hold no client."""
        if not self.clients:
            return None
        return {"urls": [client.base_url for client in self.clients], "model_name": self.model_name,
                "eos_token_ids": [int(t) for t in self.eos_token_ids]}

    # -------------------------------------------------------------------- weights

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Every rank: the current weights into every server (gathered parameter by parameter)."""
        self.syncs += 1
        if self.transfer is not None:
            self.transfer.send(model, self.dtype)
            return
        weights = full_parameters(model, self.dtype)
        if not self.is_sender:
            for _ in weights:  # the gathers rank 0 writes from
                pass
            return
        target = write_weight_files(model, self.weights_root / f"sync-{self.syncs:06d}", self.dtype, weights=weights)
        timeout = self.settings.sync_timeout_s
        body = {"method": "azr_load_weights", "args": [str(target.resolve())], "timeout": timeout}
        try:
            self._on_every_server(lambda c: c.post("/collective_rpc", body, timeout=timeout + 10))
        except VLLMError as exc:
            if "azr_load_weights" in str(exc) and self.settings.url:
                raise VLLMError(
                    f"{exc}\nThe server at {self.settings.url} cannot load weights: start it with "
                    "VLLM_SERVER_DEV_MODE=1 and --worker-extension-cls azr_vllm_extension.AZRWorkerExtension "
                    "(azr/engine/rollout/vllm/extension.py on its PYTHONPATH, saved as azr_vllm_extension.py)"
                ) from exc
            raise
        self._on_every_server(lambda c: c.reset_prefix_cache(timeout))
        if self._current_weights is not None and self._current_weights != target:
            shutil.rmtree(self._current_weights, ignore_errors=True)
        self._current_weights = target

    def _on_every_server(self, call: Callable[[VLLMClient], Any]) -> None:
        with ThreadPoolExecutor(max_workers=len(self.clients), thread_name_prefix="vllm-sync") as pool:
            for future in [pool.submit(call, client) for client in self.clients]:
                future.result()

    def close(self) -> None:
        """Stop the servers this rank started; idempotent."""
        if self.transfer is not None:
            self.transfer.close()
        for server in self.servers:
            server.stop()
        if self._current_weights is not None:
            shutil.rmtree(self._current_weights, ignore_errors=True)
            self._current_weights = None


def _start_servers(config: AZRConfig, model_dir: Path, work_dir: Path, transfer_backend: str | None,
                   dtype: torch.dtype) -> list[VLLMServer]:
    """Start every data-parallel server at once (they load in parallel); all or none."""
    rollout, settings = config.rollout, config.rollout.vllm
    count = server_count(config)
    shares = server_gpu_shares(config, count)
    servers = []
    for index, gpus in enumerate(shares):
        port = settings.port + index if settings.port else 0
        servers.append(VLLMServer(
            model_dir, work_dir if count == 1 else work_dir / f"server-{index}",
            settings.model_copy(update={"port": port}), dtype=_DTYPE_NAMES[dtype],
            max_model_len=max_model_len(config), seed=engine_seed(config),
            tensor_parallel_size=rollout.tensor_parallel_size, gpu_memory_utilization=vllm_memory_share(config),
            max_num_batched_tokens=rollout.max_num_batched_tokens, weight_transfer=transfer_backend, gpu_ids=gpus,
            name="vllm-server" if count == 1 else f"vllm-server-{index}",
        ))
    try:
        for server in servers:
            server.launch()  # from this thread, which lives as long as the engine (see launch)
        with ThreadPoolExecutor(max_workers=count, thread_name_prefix="vllm-start") as pool:
            for ready in [pool.submit(server.wait_ready) for server in servers]:
                ready.result()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def _export(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, target: Path, dtype: torch.dtype,
            writer: bool) -> Path:
    """The policy as a transformers directory for the servers to load at start: the weights are
    gathered on every rank (collective), rank 0 writes them to a temporary name and renames."""
    from azr.engine.training.checkpoints import export_pretrained

    state = {}
    for name, tensor in full_parameters(model, dtype):
        if writer:
            state[name] = tensor.to("cpu")
    if writer:
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.tmp")
        shutil.rmtree(temp, ignore_errors=True)
        try:
            export_pretrained(model, tokenizer, state, temp, dtype)
            publish_directory(temp, target)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
    return target


def _on_rank0(function: Callable[[], _T], *, share: bool = True) -> _T:
    """`function()` on rank 0; its value on every rank (`share`) or on rank 0 only, and its
    error on every rank (a VLLMError elsewhere), so no rank waits for one that failed."""
    rank, size = world()
    if size == 1:
        return function()
    value: Any = None
    error: BaseException | None = None
    message: str | None = None
    if rank == 0:
        try:
            value = function()
        except Exception as exc:  # noqa: BLE001 - handed to every rank below
            error, message = exc, f"{type(exc).__name__}: {exc}"
    message, shared = broadcast_object((message, value if share else None))
    if error is not None:
        raise error
    if message is not None:
        raise VLLMError(f"rank 0 of the engine failed with the vLLM server: {message}")
    return value if rank == 0 else shared
