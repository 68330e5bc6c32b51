"""The resident policy: model, tokenizer, optimizer, accelerator and generation backend.

Every rank of a run's engine builds one and keeps it across iterations (`azr.engine.rank.service`;
docs/architecture.md, process model); the controller reaches it through `azr.engine.controller.client.EngineClient`,
which has the same interface. Stages receive paths and small values, never models; they reach
the policy (a client, or an in-process Policy in unit tests) through the run's context
(`azr.pipeline.context.RunContext.policy`).

The collective contract (the engine is one SPMD program over `trainer.world_size()` ranks):

- Every rank builds `Policy.create(config)` with the same config, and calls every method
  (`generate`, `generate_many`, `update`, `update_scored`, `save_checkpoint`, `load_checkpoint`, `resume`,
  `sync_rollout_weights`, `close`) in the same order with the same arguments: each may run
  collectives (all-gathers of FSDP2 shards, gradient reductions, checkpoint barriers), so a
  rank that skips or reorders a call hangs the others.
- Every method returns the same value on every rank: `generate` all the completions in prompt
  order (each rank decodes a share and they are all-gathered); `update` the global metrics of
  the whole batch (each rank trains on its share; the loss weights use global per-group token
  counts; sums are all-reduced), except `seconds`/`tokens_per_second`, which are this rank's
  clock (the ranks finish together, within a collective's latency); `save_checkpoint` the
  same path (rank 0 writes the export and the marker, every rank its state shard); the
  checkpoint calls the same `CheckpointInfo`. `tokenizer` is the same on every rank.
- With one rank (the default on CPU) nothing is wrapped or communicated, whatever the strategy.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from pydantic import JsonValue

from azr.pipeline.atomic_io import PathLike
from azr.config.schema import AZRConfig
from azr.engine.training.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from azr.engine.training.distributed import apply_fsdp2, balanced_shares, materialize_from_rank0
from azr.engine.api import (
    CheckpointInfo,
    GenerationRequest,
    PromptCompletions,
    RequestGenerator,
    TrainSequence,
    UpdateMetrics,
)
from azr.engine.rollout.transformers_backend import GenerationBackend, TransformersBackend
from azr.engine.rank.stop_hooks import install_stop_hooks
from azr.engine.models.loading import compute_dtype, load_model, parameter_dtype
from azr.engine.rollout.sharded import ShardedTransformersBackend
from azr.engine.training.trrpp_update import TRRPPUpdate, UpdateSettings, make_optimizer

if TYPE_CHECKING:
    from accelerate import Accelerator
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

_MIXED_PRECISION = {torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(eq=False)
class Policy(RequestGenerator):
    """Everything model-side of one run. Build it with `Policy.create`."""

    config: AZRConfig
    model: torch.nn.Module  # DDP-wrapped by accelerator.prepare, fully_shard-ed (FSDP2), or plain on one rank
    tokenizer: PreTrainedTokenizerBase
    accelerator: Accelerator
    optimizer: torch.optim.Optimizer
    updater: TRRPPUpdate
    backend: GenerationBackend
    compute_dtype: torch.dtype
    reference_model: torch.nn.Module | None = None
    weights_version: int = field(default=0, init=False)  # bumped by every update or load
    synced_version: int = field(default=0, init=False)  # what the rollout engine holds

    @classmethod
    def create(
        cls,
        config: AZRConfig,
        *,
        cpu: bool | None = None,
        backend: GenerationBackend | None = None,
        rollout_dir: PathLike | None = None,
    ) -> Policy:
        """Load the model, build AdamW, prepare both with Accelerate, attach a backend.

        `cpu=True` forces the CPU even where CUDA exists. `backend` replaces the configured one.
        `rollout.backend: vllm` starts the vLLM engine with its files (exported weights, server
        log) under `rollout_dir` (a temporary directory if None); colocated, every rank holds
        one (`azr.engine.rollout.vllm.hybrid`: tensor-parallel groups of ranks, weights streamed in).

        Collective: on N ranks (a process group started by `accelerate launch` or torchrun,
        N = `trainer.world_size()`) every rank calls it. `trainer.strategy` decides the layout
        (`azr.engine.training.distributed`): `ddp` wraps the model in DDP through Accelerate, `fsdp`
        shards it with FSDP2, `zero3` hands it to DeepSpeed ZeRO-3 through Accelerate.
        """
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        device_type = "cpu" if cpu or not torch.cuda.is_available() else "cuda"
        compute = compute_dtype(config.model, device_type)
        params = parameter_dtype(config.model, compute, for_training=True)
        if device_type == "cpu" and compute == torch.float16:
            raise ValueError("model.dtype float16 is not supported on CPU; use bfloat16 or float32")
        mixed = _MIXED_PRECISION.get(compute, "no") if params != compute else "no"
        strategy = config.trainer.strategy
        _check_launcher_strategy(strategy)
        if strategy == "zero3":
            from azr.engine.training.zero3 import zero3_accelerator

            accelerator = zero3_accelerator(config, mixed, cpu=device_type == "cpu")
        else:
            # FSDP2 casts to the compute dtype itself (MixedPrecisionPolicy): no autocast then.
            sharded = strategy == "fsdp" and _launched_ranks() > 1
            accelerator = Accelerator(mixed_precision="no" if sharded else mixed, cpu=device_type == "cpu")
        _check_world_size(config, accelerator.num_processes)
        _check_rollout_layout(config, accelerator.num_processes)
        set_seed(config.seed)
        ranks, device = accelerator.num_processes, accelerator.device
        every_rank_loads = config.trainer.every_rank_loads_the_model() or ranks == 1
        source = None
        if every_rank_loads:
            model, tokenizer = load_model(config.model, for_training=True, seed=config.seed)
        else:  # one host copy per machine: rank 0 reads it, the others get it from rank 0
            model, tokenizer = load_model(config.model, for_training=True, seed=config.seed, empty=True)
            if accelerator.process_index == 0:
                source, _ = load_model(config.model, for_training=True, seed=config.seed)
        reference = None
        if config.trainer.kl_coef > 0:  # replicated on every rank (frozen, in the compute dtype)
            reference = copy.deepcopy(model).to(dtype=compute, device=device).eval()
            reference.requires_grad_(False)
        if strategy == "fsdp" and ranks > 1:
            if every_rank_loads:
                model = model.to(device)
            model = apply_fsdp2(model, device, compute, ranks)
        if not every_rank_loads:
            model = materialize_from_rank0(model, device, source)
            del source
        if strategy == "fsdp" and ranks > 1:
            optimizer = make_optimizer(model, config.trainer)  # over the local shards
        else:
            optimizer = make_optimizer(model, config.trainer)
            model, optimizer = accelerator.prepare(model, optimizer)
        updater = TRRPPUpdate(
            model,
            optimizer,
            accelerator,
            UpdateSettings.from_trainer(config.trainer, config.rollout.async_level),
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
            reference_model=reference,
        )
        if backend is None and config.rollout.backend == "vllm":
            from azr.engine.rollout.vllm.backend import create_vllm_backend, resolve_mode

            work_dir = Path(rollout_dir) if rollout_dir is not None else Path(tempfile.mkdtemp(prefix="azr-vllm-"))
            if resolve_mode(config.rollout.vllm.mode) == "server":  # any rank count (vllm_dedicated)
                from azr.engine.rollout.vllm.dedicated import DedicatedServerBackend

                backend = DedicatedServerBackend.start(config, accelerator.unwrap_model(model), tokenizer,
                                                       work_dir, compute)
            else:
                backend = create_vllm_backend(config, accelerator.unwrap_model(model), tokenizer, work_dir, compute)
        elif backend is None:
            kind = ShardedTransformersBackend if accelerator.num_processes > 1 else TransformersBackend
            backend = kind.from_rollout(accelerator.unwrap_model(model), tokenizer, config.rollout, compute_dtype=compute)
            backend.synced_gpus = strategy == "zero3" and accelerator.num_processes > 1
        install_stop_hooks(accelerator.unwrap_model(model))  # a stop is seen between layers, not only between steps
        if reference is not None:
            install_stop_hooks(reference)
        return cls(config, model, tokenizer, accelerator, optimizer, updater, backend, compute, reference)

    @property
    def unwrapped_model(self) -> PreTrainedModel:
        return self.accelerator.unwrap_model(self.model)

    def generate_many(self, requests: Sequence[GenerationRequest]) -> list[PromptCompletions]:
        """Several requests (prompts with their own sampling settings) in one backend call, so
        the batches are fuller; each request's completions as `generate` gives them."""
        self.sync_rollout_weights()
        return self.backend.generate_many(requests)

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    def update(self, sequences: Sequence[TrainSequence]) -> UpdateMetrics:
        """One TRR++ step on the whole batch; each rank trains on its share (balanced by
        tokens), and the metrics are the batch's."""
        sequences = list(sequences)
        if not sequences:
            raise ValueError("an update needs at least one sequence")
        self.backend.prepare_for_update()
        shares = balanced_shares([len(s.prompt_ids) + len(s.response_ids) for s in sequences], self.world_size)
        metrics = self.updater.step([sequences[i] for i in shares[self.rank]], filler=sequences[0])
        self.weights_version += 1
        return replace(metrics, strategy=self.strategy)

    @property
    def world_size(self) -> int:
        return int(self.accelerator.num_processes)

    @property
    def strategy(self) -> str:
        return self.config.trainer.strategy

    def update_scored(self, scored: PathLike) -> dict[str, JsonValue]:
        """The update on the trained rows of a `scored.parquet`: the metrics of update.json,
        with the layout that produced them."""
        from azr.engine.training.sequences import read_train_sequences

        sequences = read_train_sequences(scored)
        metrics: dict[str, JsonValue] = (self.update(sequences).as_dict() if sequences
                                         else {"skipped": True, "sequences": 0, "tokens": 0})
        return {**metrics, "world_size": self.world_size, "strategy": self.strategy}

    def sync_rollout_weights(self) -> float | None:
        """Give a separate rollout engine (vLLM) the current weights if it holds older ones;
        the seconds it took, or None when nothing was due. Generation calls it first, so a
        rollout never uses stale weights; the update stage calls it to time it."""
        backend = self.backend
        if not backend.separate_weights or (self.synced_version == self.weights_version and not backend.weights_discarded):
            return None
        start = time.perf_counter()
        backend.sync_weights(self.unwrapped_model)
        self.synced_version = self.weights_version
        return time.perf_counter() - start

    def close(self) -> None:
        """Stop the rollout engine (a vLLM server process); the policy cannot generate after."""
        self.backend.close()

    def save_checkpoint(self, root: PathLike, step: int, metadata: Mapping[str, JsonValue] | None = None) -> Path:
        return save_checkpoint(
            self.accelerator,
            self.model,
            self.tokenizer,
            root,
            step,
            optimizer=self.optimizer,
            keep_last=self.config.trainer.keep_checkpoints,
            export_dtype=self.compute_dtype,
            metadata=metadata,
            strategy=self.config.trainer.strategy,
        )

    def load_checkpoint(self, path: PathLike) -> CheckpointInfo:
        """Restore weights and AdamW state from a checkpoint written on any rank count."""
        info = load_checkpoint(self.accelerator, path, model=self.model, optimizer=self.optimizer)
        self.weights_version += 1
        return info

    def resume(self, root: PathLike) -> CheckpointInfo | None:
        """Load the newest complete checkpoint under `root`, if any."""
        path = latest_checkpoint(root)
        return self.load_checkpoint(path) if path is not None else None


def _launched_ranks() -> int:
    """The rank count the launcher (accelerate launch, torchrun) announced in WORLD_SIZE."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def _check_launcher_strategy(strategy: str) -> None:
    """An `accelerate launch` config of another type than trainer.strategy would silently win
    over it inside Accelerate: refuse that."""
    import os

    launcher = {"ACCELERATE_USE_FSDP": "fsdp", "ACCELERATE_USE_DEEPSPEED": "zero3"}
    for variable, wants in launcher.items():
        if os.environ.get(variable, "false").lower() == "true" and strategy != wants:
            raise ValueError(
                f"the engine was launched with an Accelerate config for {wants} ({variable}=true) but "
                f"trainer.strategy is {strategy}: set -s trainer.strategy={wants}, or launch with the "
                f"config of {strategy} (infra/accelerate/)"
            )


def _check_world_size(config: AZRConfig, ranks: int) -> None:
    """A launched engine must have the configured rank count. A process that no launcher
    started (no WORLD_SIZE) is one rank whatever the config says: an in-process policy, as in
    tests and benchmarks, runs the 1-process update the N-rank one equals."""
    import os

    expected = config.trainer.world_size()
    if ranks != expected and "WORLD_SIZE" in os.environ:
        raise ValueError(
            f"the engine has {ranks} rank(s) but the config asks for {expected} "
            f"(trainer.processes={config.trainer.processes}, trainer.gpus={config.trainer.gpus}); "
            f"start it with `accelerate launch --num_processes {expected}` (or torchrun "
            f"--nproc-per-node {expected}), or set -s trainer.processes={ranks}"
        )


def _check_rollout_layout(config: AZRConfig, ranks: int) -> None:
    """Colocated vLLM runs one engine per `rollout.tensor_parallel_size` ranks: refuse a degree
    that does not divide the rank count before the model loads."""
    from azr.engine.rollout.vllm.backend import resolve_mode

    rollout = config.rollout
    if rollout.backend == "vllm" and resolve_mode(rollout.vllm.mode) == "colocate":
        from azr.engine.rollout.vllm.hybrid import hybrid_layout

        hybrid_layout(config, 0, ranks)

