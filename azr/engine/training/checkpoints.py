"""Checkpoints: the full training state plus a plain transformers export.

Layout of `ROOT/step-00000010/`:

    state/       torch.distributed.checkpoint (DCP): model + AdamW state, one file per rank
                 (FSDP2 ranks write their shards), and rng-rank-N.pt (each rank's torch RNG)
    export/      save_pretrained model (in the compute dtype) + tokenizer, for evaluation/serving
                 (the full weights gathered onto rank 0)
    meta.json    step, the rank count and strategy that wrote it, caller metadata
    COMPLETE     marker, written last

The state is keyed by parameter names (torch's `get_state_dict`), not by rank layout, so DCP
reshards on load: a checkpoint written by 2 FSDP2 ranks loads into 1 process or into DDP, and
the other way round, with the same weights and optimizer state. Every rank must see `ROOT`
(a shared filesystem across machines). A checkpoint in Accelerate's save_state layout also
loads, on the rank layout that wrote it.

Everything is written into `ROOT/.tmp-step-00000010/`, the marker last, and the directory is
then renamed into place: a kill during a save leaves a temporary directory, never a checkpoint
that looks complete. Readers only trust directories that have the marker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from pydantic import JsonValue

from azr.pipeline.atomic_io import (
    PathLike, atomic_write_json, checksum_problems, fsync_directory, publish_directory, tree_checksums,
)
from azr.engine import interrupt
from azr.engine.api import EXPORT_DIR, CheckpointInfo
from azr.engine.training.distributed import barrier, world
from azr.engine.training.zero3 import is_deepspeed

if TYPE_CHECKING:
    from accelerate import Accelerator
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MARKER = "COMPLETE"
META = "meta.json"
STATE_DIR = "state"
_NAME = re.compile(r"^step-(\d{8,})$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message says why."""


def checkpoint_name(step: int) -> str:
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return f"step-{step:08d}"


def is_complete(path: PathLike) -> bool:
    """The marker exists and names this directory's step (a garbled marker is no marker)."""
    path = Path(path)
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    match = _NAME.match(path.name)
    return isinstance(marker, dict) and (match is None or marker.get("step") == int(match.group(1)))


def checkpoint_problems(path: PathLike, *, content: bool = True) -> list[str]:
    """What makes a checkpoint unusable, without loading it: an empty list when it is intact.

    Checks what a torn copy or a full disk damages: the marker and meta.json, every file the
    DCP index points into (present and long enough), the model and the optimizer entries, one
    RNG file per saving rank, and the headers of the export's safetensors files; then, with
    `content`, what a flipped bit damages: every file against the sha256 its marker holds
    (one read of the checkpoint; no tensor is deserialised).
    """
    path = Path(path)
    if not is_complete(path):
        return [f"{path / MARKER} is missing or does not name step {path.name}"]
    try:
        meta = _read_meta(path)
    except CheckpointError as exc:
        return [str(exc)]
    problems = []
    match = _NAME.match(path.name)
    if match is not None and meta.get("step") != int(match.group(1)):
        problems.append(f"{path / META} names step {meta.get('step')!r}, not the directory's")
    state = path / STATE_DIR
    if (state / _DCP_METADATA).is_file():
        problems += _dcp_problems(state)
        problems += _rng_problems(state, int(meta.get("world_size") or 1))
    elif not state.is_dir() or not any(state.iterdir()):
        problems.append(f"{state} holds no training state")
    problems += _safetensors_problems(path / EXPORT_DIR)
    if content and not problems:
        problems += checksum_problems(path, marker_checksums(path))
    return problems


def marker_checksums(path: PathLike) -> dict[str, str]:
    """The sha256 of each file the completion marker lists ({} for a checkpoint written before
    checksums, or a marker that names none)."""
    try:
        marker = json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return {}
    sums = marker.get("sha256") if isinstance(marker, dict) else None
    return {str(k): str(v) for k, v in sums.items()} if isinstance(sums, dict) else {}


def _dcp_problems(state: Path) -> list[str]:
    """The DCP index is readable, has model and optimizer entries, and every byte range it
    names lies inside a file that exists."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        metadata = FileSystemReader(str(state)).read_metadata()
    except Exception as exc:  # noqa: BLE001 - any failure to read the index makes it unusable
        return [f"{state / _DCP_METADATA} is unreadable ({type(exc).__name__}: {exc})"]
    problems = []
    keys = list(metadata.state_dict_metadata)
    for prefix, what in (("model.", "model weights"), ("optimizer.state.", "optimizer state")):
        if not any(key.startswith(prefix) for key in keys):
            problems.append(f"{state} has no {what} ({prefix}* entries)")
    needed: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for name, size in sorted(needed.items()):
        file = state / name
        if not file.is_file():
            problems.append(f"{file} is missing")
        elif file.stat().st_size < size:
            problems.append(f"{file} is truncated ({file.stat().st_size} of {size} bytes)")
    return problems


def _rng_problems(state: Path, ranks: int) -> list[str]:
    problems = []
    for rank in range(ranks):
        file = state / f"rng-rank-{rank}.pt"
        try:
            rng = torch.load(file, weights_only=True)
        except FileNotFoundError:
            problems.append(f"{file} is missing")
            continue
        except Exception as exc:  # noqa: BLE001 - a garbled file raises whatever the unpickler hits
            problems.append(f"{file} is unreadable ({type(exc).__name__}: {str(exc)[:200]})")
            continue
        if not isinstance(rng, dict) or not isinstance(rng.get("torch"), torch.ByteTensor):
            problems.append(f"{file} holds no torch RNG state")
    return problems


def _safetensors_problems(export: Path) -> list[str]:
    from safetensors import SafetensorError, safe_open

    files = sorted(export.glob("*.safetensors")) if export.is_dir() else []
    if not files:
        return [f"{export} has no safetensors weights"]
    problems = []
    for file in files:
        try:
            with safe_open(str(file), "pt"):
                pass
        except (SafetensorError, OSError) as exc:
            problems.append(f"{file} is damaged ({exc})")
    return problems


def list_checkpoints(root: PathLike) -> list[CheckpointInfo]:
    """Complete checkpoints under `root`, oldest step first; anything without a marker is skipped."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_dir() and is_complete(path):
            try:
                meta = _read_meta(path)
            except CheckpointError:
                continue  # a garbled meta.json: not a checkpoint to trust (resume says so, run_state.py)
            found.append(CheckpointInfo(path, int(match.group(1)), meta.get("metadata", {})))
    return sorted(found, key=lambda info: info.step)


def latest_checkpoint(root: PathLike) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    checkpoints = list_checkpoints(root)
    return checkpoints[-1].path if checkpoints else None


def save_checkpoint(
    accelerator: Accelerator,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    root: PathLike,
    step: int,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    keep_last: int = 1,
    export_dtype: torch.dtype | None = None,
    metadata: Mapping[str, JsonValue] | None = None,
    strategy: str | None = None,
) -> Path:
    """Write checkpoint `step` under `root` and prune to the newest `keep_last`.

    Collective: call it on every rank. Each rank writes its part of the state; rank 0 writes
    the export, the marker and does the renames. Saving a step that exists replaces it.
    `optimizer` defaults to the one prepared by `accelerator`.
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    root = Path(root)
    name = checkpoint_name(step)
    final = root / name
    temp = root / f".tmp-{name}"
    main = accelerator.is_main_process
    if main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temp, ignore_errors=True)  # the leftover of a killed save
        temp.mkdir()
    barrier()
    try:
        if is_deepspeed(accelerator):  # DeepSpeed's own partitioned checkpoint
            accelerator.save_state(str(temp / STATE_DIR))
        else:
            save_training_state(model, _optimizer(accelerator, optimizer), temp / STATE_DIR)
        state_dict = export_state_dict(accelerator, model)
        if main:
            interrupt.stop_point("checkpoint save, after the training state")
            export_pretrained(accelerator.unwrap_model(model), tokenizer, state_dict, temp / EXPORT_DIR, export_dtype)
            layout = {"world_size": world()[1], "strategy": strategy}
            atomic_write_json(
                temp / META, {"step": step, "saved_at": time.time(), **layout, "metadata": dict(metadata or {})}
            )
            interrupt.stop_point("checkpoint save, after the export")
            _fsync_files(temp)
            interrupt.stop_point("checkpoint save, before the checksums")
            # the content checksums go into the marker, written last: a checkpoint is complete and
            # verifiable together (checkpoint_problems compares them)
            atomic_write_json(temp / MARKER, {"step": step, "sha256": tree_checksums(temp, skip=(MARKER,))})
            publish_directory(temp, final)
            _prune(root, keep_last)
    except interrupt.CommandStopped:
        if main:  # a stopped save is no checkpoint: nothing of it stays
            shutil.rmtree(temp, ignore_errors=True)
        raise
    barrier()
    return final


def load_checkpoint(accelerator: Accelerator, path: PathLike, *, model: torch.nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None) -> CheckpointInfo:
    """Restore the model, AdamW and RNG states saved by `save_checkpoint`, on any rank count.

    Collective: call it on every rank. `model` and `optimizer` default to the ones prepared
    by `accelerator`.
    """
    path = Path(path)
    if not is_complete(path):
        raise CheckpointError(f"{path} is not a complete checkpoint (no {MARKER} marker); use latest_checkpoint()")
    meta = _read_meta(path)
    state = path / STATE_DIR
    if (state / _DCP_METADATA).is_file() and not is_deepspeed(accelerator):
        load_training_state(model if model is not None else accelerator._models[0], _optimizer(accelerator, optimizer), state)
    elif is_deepspeed(accelerator) and meta.get("world_size") not in (None, world()[1]):
        raise CheckpointError(
            f"{path} was written by {meta['world_size']} ZeRO-3 ranks; DeepSpeed checkpoints resume on the same "
            f"rank count (this engine has {world()[1]})"
        )
    else:  # ZeRO-3, or a checkpoint from before DCP (Accelerate's layout)
        accelerator.load_state(str(state))
    return CheckpointInfo(path, int(meta["step"]), meta.get("metadata", {}))


_DCP_METADATA = ".metadata"


def save_training_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """DCP save of the model and optimizer state by parameter name, plus this rank's RNG."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save(
        {"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(directory), no_dist=world()[1] == 1
    )
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, directory / f"rng-rank-{world()[0]}.pt")


def load_training_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """DCP load into this rank's layout (DCP reads the slices it needs), then the RNG of this
    rank if the saving run had a rank with this number."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=str(directory), no_dist=world()[1] == 1)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    rng_file = directory / f"rng-rank-{world()[0]}.pt"
    if rng_file.is_file():
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])


def export_state_dict(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights for an export, complete on rank 0; collective. ZeRO-3: the
    16-bit consolidation of DeepSpeed's partitions; otherwise torch's full state dict, which
    gathers FSDP2 shards (the engine shards with `fully_shard` itself, so Accelerate does not
    know the model is sharded and its `get_state_dict` would return DTensor shards)."""
    if is_deepspeed(accelerator):
        return accelerator.get_state_dict(model)
    return full_model_state_dict(model)


def full_model_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on CPU, gathered from FSDP2 shards; collective. Complete on
    rank 0 (other ranks of a sharded model get an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _optimizer(accelerator: Accelerator, optimizer: torch.optim.Optimizer | None) -> torch.optim.Optimizer:
    """The torch optimizer (unwrapped from Accelerate's AcceleratedOptimizer)."""
    if optimizer is None:
        if not accelerator._optimizers:
            raise ValueError("no optimizer: pass optimizer= or prepare one with the accelerator")
        optimizer = accelerator._optimizers[0]
    from accelerate.optimizer import AcceleratedOptimizer

    return optimizer.optimizer if isinstance(optimizer, AcceleratedOptimizer) else optimizer


def log_checkpoint_to_mlflow(
    path: PathLike,
    *,
    run_id: str | None = None,
    name: str = "policy",
    tracking_uri: str | None = None,
) -> str:
    """Log a checkpoint's transformers export as an MLflow logged model of the run; returns the
    model id (`models:/<id>` downloads a directory that from_pretrained loads).

    The export is logged as plain files, not through `mlflow.transformers` (whose flavor does
    not accept transformers 5 pipelines at MLflow 3.17).
    """
    import mlflow
    from mlflow.entities import LoggedModelOutput

    path = Path(path)
    if not is_complete(path):
        raise CheckpointError(f"{path} is not a complete checkpoint (no {MARKER} marker)")
    step = int(_read_meta(path)["step"])
    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            raise ValueError("no MLflow run: pass run_id or call inside mlflow.start_run()")
        run_id = active.info.run_id
    client = mlflow.MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    logged = client.create_logged_model(
        run.info.experiment_id,
        name=name,
        source_run_id=run_id,
        params={"step": str(step)},
        tags={"azr.checkpoint": str(path.resolve())},
        model_type="transformers",
    )
    try:
        client.log_model_artifacts(logged.model_id, str(path / EXPORT_DIR))
    except BaseException:
        client.finalize_logged_model(logged.model_id, "FAILED")
        raise
    client.finalize_logged_model(logged.model_id, "READY")
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step)])
    return logged.model_id


def export_pretrained(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, state_dict: dict[str, torch.Tensor], target: Path,
    dtype: torch.dtype | None,
) -> None:
    """save_pretrained with the weights cast to `dtype` (the compute dtype: what serving uses)."""
    if dtype is not None:
        state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    model.save_pretrained(target, state_dict=state_dict)
    tokenizer.save_pretrained(target)
    if dtype is not None:
        config_path = target / "config.json"
        config = json.loads(config_path.read_text())
        config["dtype"] = str(dtype).removeprefix("torch.")
        atomic_write_json(config_path, config)


def _prune(root: Path, keep_last: int) -> None:
    for info in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(info.path, ignore_errors=True)


def _fsync_files(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    for sub in [directory, *[p for p in directory.rglob("*") if p.is_dir()]]:
        fsync_directory(sub)


def _read_meta(path: Path) -> dict[str, JsonValue]:
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path / META} is unreadable: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise CheckpointError(f"{path / META} is not a checkpoint's meta.json (no step)")
    return meta
