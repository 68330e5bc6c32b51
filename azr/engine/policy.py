"""The resident policy: model, tokenizer, optimizer, accelerator and generation backend.

Every rank of a run's engine builds one and keeps it across iterations (`azr.engine.service`;
DESIGN.md, process model); the controller reaches it through `azr.engine.client.EngineClient`,
which has the same interface. Stages receive paths and small values, never models; they reach
the policy (a client, or an in-process Policy in unit tests) through `get_policy()`, after the
run has called `set_policy(...)`.
"""

from __future__ import annotations

import copy
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from azr.artifacts import PathLike
from azr.config import AZRConfig
from azr.engine.checkpoints import CheckpointInfo, latest_checkpoint, load_checkpoint, save_checkpoint
from azr.engine.generation import Completion, GenerationBackend, SamplingSettings, TransformersBackend
from azr.engine.models import compute_dtype, load_model, parameter_dtype
from azr.engine.update import TrainSequence, TRRPPUpdate, UpdateMetrics, UpdateSettings, make_optimizer

_MIXED_PRECISION = {torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(eq=False)
class Policy:
    """Everything model-side of one run. Build it with `Policy.create`."""

    config: AZRConfig
    model: Any  # as returned by accelerator.prepare (possibly DDP/FSDP wrapped)
    tokenizer: Any
    accelerator: Any
    optimizer: torch.optim.Optimizer
    updater: TRRPPUpdate
    backend: GenerationBackend
    compute_dtype: torch.dtype
    reference_model: Any = None
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
        log) under `rollout_dir` (a temporary directory if None).
        """
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        device_type = "cpu" if cpu or not torch.cuda.is_available() else "cuda"
        compute = compute_dtype(config.model, device_type)
        params = parameter_dtype(config.model, compute, for_training=True)
        if device_type == "cpu" and compute == torch.float16:
            raise ValueError("model.dtype float16 is not supported on CPU; use bfloat16 or float32")
        mixed = _MIXED_PRECISION.get(compute, "no") if params != compute else "no"
        accelerator = Accelerator(mixed_precision=mixed, cpu=device_type == "cpu")
        set_seed(config.seed)
        model, tokenizer = load_model(config.model, for_training=True, seed=config.seed)
        reference = None
        if config.trainer.kl_coef > 0:
            reference = copy.deepcopy(model).to(dtype=compute, device=accelerator.device).eval()
            reference.requires_grad_(False)
        optimizer = make_optimizer(model, config.trainer)
        model, optimizer = accelerator.prepare(model, optimizer)
        updater = TRRPPUpdate(
            model,
            optimizer,
            accelerator,
            UpdateSettings.from_trainer(config.trainer),
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
            reference_model=reference,
        )
        if backend is None and config.rollout.backend == "vllm":
            from azr.engine.vllm_backend import create_vllm_backend

            work_dir = Path(rollout_dir) if rollout_dir is not None else Path(tempfile.mkdtemp(prefix="azr-vllm-"))
            backend = create_vllm_backend(config, accelerator.unwrap_model(model), tokenizer, work_dir, compute)
        elif backend is None:
            backend = TransformersBackend.from_rollout(
                accelerator.unwrap_model(model), tokenizer, config.rollout, compute_dtype=compute
            )
        return cls(config, model, tokenizer, accelerator, optimizer, updater, backend, compute, reference)

    @property
    def unwrapped_model(self) -> Any:
        return self.accelerator.unwrap_model(self.model)

    def generate(self, prompts: Sequence[str], settings: SamplingSettings) -> list[list[Completion]]:
        self.sync_rollout_weights()
        return self.backend.generate(prompts, settings)

    def update(self, sequences: Sequence[TrainSequence]) -> UpdateMetrics:
        prepare = getattr(self.backend, "prepare_for_update", None)
        if prepare is not None:
            prepare()
        metrics = self.updater.step(sequences)
        self.weights_version += 1
        return metrics

    @property
    def world_size(self) -> int:
        return int(self.accelerator.num_processes)

    @property
    def strategy(self) -> str:
        return self.config.trainer.strategy

    def update_scored(self, scored: PathLike) -> dict[str, Any]:
        """The update on the trained rows of a `scored.parquet`: the metrics of update.json,
        with the layout that produced them."""
        from azr.engine.sequences import read_train_sequences

        sequences = read_train_sequences(scored)
        metrics = self.update(sequences).as_dict() if sequences else {"skipped": True, "sequences": 0, "tokens": 0}
        return {**metrics, "world_size": self.world_size, "strategy": self.strategy}

    def sync_rollout_weights(self) -> float | None:
        """Give a separate rollout engine (vLLM) the current weights if it holds older ones;
        the seconds it took, or None when nothing was due. Generation calls it first, so a
        rollout never uses stale weights; the update stage calls it to time it."""
        sync = getattr(self.backend, "sync_weights", None)
        if sync is None or self.synced_version == self.weights_version:
            return None
        start = time.perf_counter()
        sync(self.unwrapped_model)
        self.synced_version = self.weights_version
        return time.perf_counter() - start

    def close(self) -> None:
        """Stop the rollout engine (a vLLM server process); the policy cannot generate after."""
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()

    def save_checkpoint(self, root: PathLike, step: int, metadata: Mapping[str, Any] | None = None) -> Path:
        return save_checkpoint(
            self.accelerator,
            self.model,
            self.tokenizer,
            root,
            step,
            keep_last=self.config.trainer.keep_checkpoints,
            export_dtype=self.compute_dtype,
            metadata=metadata,
        )

    def load_checkpoint(self, path: PathLike) -> CheckpointInfo:
        info = load_checkpoint(self.accelerator, path)
        self.weights_version += 1
        return info

    def resume(self, root: PathLike) -> CheckpointInfo | None:
        """Load the newest complete checkpoint under `root`, if any."""
        path = latest_checkpoint(root)
        return self.load_checkpoint(path) if path is not None else None


_lock = threading.Lock()
_current: Policy | None = None


def set_policy(policy: Policy | None) -> None:
    """Make `policy` the process's resident policy (None clears it)."""
    global _current
    with _lock:
        _current = policy


def get_policy() -> Policy:
    """The resident policy; an error if the run has not created one in this process."""
    with _lock:
        if _current is None:
            raise RuntimeError(
                "no resident policy in this process: the training run creates it once with "
                "set_policy(Policy.create(config)) before any stage that generates or trains"
            )
        return _current


def has_policy() -> bool:
    with _lock:
        return _current is not None
