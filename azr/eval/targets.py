"""What `--model` names: a model (hub id, local directory, `bundled:...`, `tiny-random`), one
checkpoint directory, or a training run directory.

A run directory is evaluated at its newest complete checkpoint (or a chosen step), through the
checkpoint's `export/` folder, a plain transformers model. Its `run.json` says which MLflow run
the evaluation nests under, and its `config.yaml` supplies the model settings training used
(prompt wrapper, dtype), so the model is asked the way it was trained.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from azr.eval.benchmarks.problems import EvalDataError

RUN_INFO = "run.json"
RUN_CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class RunInfo:
    """The training run's MLflow coordinates, as written to RUN_DIR/run.json."""

    mlflow_run_id: str
    tracking_uri: str
    experiment: str


@dataclass(frozen=True)
class ModelTarget:
    model: str  # what the model loader gets (hub id, directory, bundled:..., tiny-random)
    label: str  # short, for run names and output folders
    run_dir: Path | None = None
    checkpoint: Path | None = None
    step: int | None = None
    run_info: RunInfo | None = None
    note: str = ""  # something the user should know (e.g. the asked-for step was gone)

    @property
    def run_config(self) -> Path | None:
        """The training run's config.yaml, when the target comes from a run directory."""
        if self.run_dir is None:
            return None
        path = self.run_dir / RUN_CONFIG
        return path if path.is_file() else None


def read_run_info(run_dir: Path) -> RunInfo | None:
    """RUN_DIR/run.json, or None when the run has none (it is then logged standalone)."""
    path = run_dir / RUN_INFO
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvalDataError(f"{path} is unreadable: {exc}") from exc
    fields = ("mlflow_run_id", "tracking_uri", "experiment")
    if not isinstance(data, dict):
        data = {}
    missing = [name for name in fields if not isinstance(data.get(name), str) or not data[name]]
    if missing:
        raise EvalDataError(f"{path} lacks {', '.join(missing)}; expected an object with {', '.join(fields)} (strings)")
    return RunInfo(data["mlflow_run_id"], data["tracking_uri"], data["experiment"])


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and ((path / RUN_INFO).is_file() or (path / CHECKPOINTS).is_dir())


def _label(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "model"


def _from_run_dir(run_dir: Path, step: int | None) -> ModelTarget:
    from azr.engine.training.checkpoints import EXPORT_DIR, list_checkpoints

    checkpoints = list_checkpoints(run_dir / CHECKPOINTS)
    if not checkpoints:
        raise EvalDataError(
            f"{run_dir} is a training run directory without a complete checkpoint yet "
            f"(none under {run_dir / CHECKPOINTS}); evaluate it after its first checkpoint"
        )
    chosen, note = checkpoints[-1], ""
    if step is not None:
        match = [c for c in checkpoints if c.step == step]
        if not match:  # another checkpoint's scores filed under this step would be silently wrong
            steps = ", ".join(str(c.step) for c in checkpoints)
            raise EvalDataError(
                f"{run_dir} has no complete checkpoint of step {step} (it was never saved, or was pruned: "
                f"trainer.keep_checkpoints); its checkpoints are at steps {steps}. Pass one of them to --step, "
                "or leave --step out for the newest"
            )
        chosen = match[0]
    export = chosen.path / EXPORT_DIR
    if not (export / "config.json").is_file():
        raise EvalDataError(f"{chosen.path} has no transformers export ({export}/config.json is missing)")
    return ModelTarget(
        model=str(export), label=f"{_label(run_dir.resolve().name)}-step{chosen.step}", run_dir=run_dir,
        checkpoint=chosen.path, step=chosen.step, run_info=read_run_info(run_dir), note=note,
    )


def pin_export(export: Path, destination: Path) -> bool:
    """Hard-link a checkpoint's export into `destination`; False where that is impossible.

    A training run prunes old checkpoints while its evaluations may still be waiting to load
    them; hard links keep the files alive (checkpoint files are never rewritten in place, only
    published by rename), at no copy cost. Across file systems the caller loads the original.
    """
    if destination.exists():
        shutil.rmtree(destination)
    try:
        for source in sorted(export.rglob("*")):
            target = destination / source.relative_to(export)
            if source.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(source, target)
    except OSError:
        shutil.rmtree(destination, ignore_errors=True)
        return False
    return True


def resolve_target(model: str, step: int | None = None) -> ModelTarget:
    """Interpret `--model`; `step` picks a checkpoint of a run directory (default: the newest)."""
    path = Path(model).expanduser()
    if is_run_dir(path):
        return _from_run_dir(path, step)
    checkpoint_step = re.fullmatch(r"step-(\d{8,})", path.name)
    if path.is_dir() and (path / "COMPLETE").is_file() and checkpoint_step:
        if path.parent.name == CHECKPOINTS:  # one checkpoint of a run: nest under that run
            return _from_run_dir(path.parent.parent, int(checkpoint_step.group(1)))
        step_number = int(checkpoint_step.group(1))
        return ModelTarget(model=str(path / "export"), label=_label(path.name), checkpoint=path, step=step_number)
    if step is not None:
        raise EvalDataError(f"--step is for training run directories; {model!r} is not one")
    return ModelTarget(model=model, label=_label(path.name if path.exists() else model))
