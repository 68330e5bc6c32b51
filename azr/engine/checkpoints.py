"""Checkpoints: the full training state plus a plain transformers export.

Layout of `ROOT/step-00000010/`:

    state/       accelerator.save_state: model, optimizer, scheduler, RNG states
    export/      save_pretrained model (in the compute dtype) + tokenizer, for evaluation/serving
    meta.json    step and caller metadata
    COMPLETE     marker, written last

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from azr.artifacts import PathLike, atomic_write_json, fsync_directory, publish_directory

MARKER = "COMPLETE"
META = "meta.json"
STATE_DIR = "state"
EXPORT_DIR = "export"
_NAME = re.compile(r"^step-(\d{8,})$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message says why."""


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def export_dir(self) -> Path:
        return self.path / EXPORT_DIR


def checkpoint_name(step: int) -> str:
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return f"step-{step:08d}"


def is_complete(path: PathLike) -> bool:
    return (Path(path) / MARKER).is_file()


def list_checkpoints(root: PathLike) -> list[CheckpointInfo]:
    """Complete checkpoints under `root`, oldest step first; anything without a marker is skipped."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_dir() and is_complete(path):
            found.append(CheckpointInfo(path, int(match.group(1)), _read_meta(path).get("metadata", {})))
    return sorted(found, key=lambda info: info.step)


def latest_checkpoint(root: PathLike) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    checkpoints = list_checkpoints(root)
    return checkpoints[-1].path if checkpoints else None


def save_checkpoint(
    accelerator: Any,
    model: Any,
    tokenizer: Any,
    root: PathLike,
    step: int,
    *,
    keep_last: int = 1,
    export_dtype: torch.dtype | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write checkpoint `step` under `root` and prune to the newest `keep_last`.

    Call it on every process (Accelerate gathers sharded state); the main process writes the
    export, the marker and does the renames. Saving a step that exists replaces it.
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
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temp / STATE_DIR))
    state_dict = accelerator.get_state_dict(model)
    if main:
        export_pretrained(accelerator.unwrap_model(model), tokenizer, state_dict, temp / EXPORT_DIR, export_dtype)
        atomic_write_json(temp / META, {"step": step, "saved_at": time.time(), "metadata": dict(metadata or {})})
        _fsync_files(temp)
        atomic_write_json(temp / MARKER, {"step": step})
        publish_directory(temp, final)
        _prune(root, keep_last)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, path: PathLike) -> CheckpointInfo:
    """Restore model, optimizer, scheduler and RNG states saved by `save_checkpoint`."""
    path = Path(path)
    if not is_complete(path):
        raise CheckpointError(f"{path} is not a complete checkpoint (no {MARKER} marker); use latest_checkpoint()")
    meta = _read_meta(path)
    accelerator.load_state(str(path / STATE_DIR))
    return CheckpointInfo(path, int(meta["step"]), meta.get("metadata", {}))


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
    model: Any, tokenizer: Any, state_dict: dict[str, torch.Tensor], target: Path, dtype: torch.dtype | None
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


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / META).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path / META} is unreadable: {exc}") from exc
