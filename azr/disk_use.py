"""How much disk a run needs, and a check against the free space before it is spent.

What a run writes (README, "Disk use"): per iteration its stage files and their MLflow samples
(about a megabyte at the tiny and cpu presets' batch sizes, growing with batch size and response
length), and at every checkpoint the checkpoint itself (the export in the compute dtype, plus
the trained weights and the two AdamW moments in the master dtype) and, every
`tracking.log_checkpoint_every` iterations, a logged MLflow model (a copy of the export).
Checkpoints are pruned to `trainer.keep_checkpoints` (one more exists while a new one is being
written) and logged models to `tracking.keep_logged_models`, so the peak is bounded; the
estimate below is that peak.

The free space is read with `shutil.disk_usage`; a run whose peak clearly exceeds it is refused
before it starts, and each checkpoint and logged model is preceded by a warning when the disk
would fill.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from azr.config import AZRConfig

# Measured (README, "Disk use"): run-directory bytes per generated sequence of an iteration
# (prompts, responses, token ids, programs and rewards over all stage files), tiny and cpu presets.
STAGE_BYTES_PER_SEQUENCE = 6_000
SAFETY_FACTOR = 1.2  # tokenizer files, metadata, MLflow's own files, the filesystem's blocks


class DiskSpaceError(RuntimeError):
    """The disk cannot hold what the run will write; the message says how much and what to change."""


@dataclass(frozen=True)
class DiskEstimate:
    checkpoint_bytes: int  # one checkpoint directory
    logged_model_bytes: int  # one logged MLflow model
    iteration_bytes: int  # stage files of one iteration
    iterations: int

    def run_dir_peak(self, keep_checkpoints: int) -> int:
        """Stage files of every iteration, plus the kept checkpoints and the one being written."""
        return self.iteration_bytes * self.iterations + self.checkpoint_bytes * (keep_checkpoints + 1)

    def mlflow_peak(self, keep_logged_models: int | None, logged_models: int) -> int:
        kept = logged_models if keep_logged_models is None else min(keep_logged_models + 1, logged_models)
        return self.logged_model_bytes * kept


def _bytes_per_parameter(config: AZRConfig) -> tuple[int, int]:
    """(export, master) bytes per parameter, as the engine writes them."""
    dtype = config.model.dtype
    half = dtype in ("bfloat16", "float16") or (dtype == "auto" and config.trainer.gpus > 0)
    export = 2 if half else 4
    master = 4 if config.model.master_dtype == "float32" else export
    return export, master


def estimate(config: AZRConfig, parameters: int) -> DiskEstimate:
    """The disk a run of `config` writes, for a model of `parameters` parameters."""
    export, master = _bytes_per_parameter(config)
    sequences = config.rollout.batch_size * len(config.tasks.types) * 2 * (1 + config.rollout.mc_samples)
    return DiskEstimate(
        checkpoint_bytes=int(parameters * (export + 3 * master) * SAFETY_FACTOR),
        logged_model_bytes=int(parameters * export * SAFETY_FACTOR),
        iteration_bytes=sequences * STAGE_BYTES_PER_SEQUENCE,
        iterations=config.trainer.iterations,
    )


def logged_model_count(config: AZRConfig) -> int:
    """Checkpoints the run logs to MLflow (every k-th checkpoint iteration, and the last)."""
    every = max(config.tracking.log_checkpoint_every, config.trainer.checkpoint_every)
    return config.trainer.iterations // every + 1


def free_bytes(path: Path) -> int:
    """Free space of the file system that holds `path` (or its nearest existing parent)."""
    return shutil.disk_usage(_existing(path)).free


def gib(size: float) -> str:
    """1.5 GiB, or 12 MiB below a GiB."""
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def check_run(config: AZRConfig, run_root: Path, done: int = 0) -> list[str]:
    """`check_before_start` for a run directory: its model's size from the shipped or local
    architecture facts (no check where they are unknown), the default MLflow artifact folder
    beside it (another tracking store is not measured), `done` iterations already on disk."""
    from azr.model_facts import ModelFactsError, model_facts
    from azr.pipeline.run_dir import RunDir, default_tracking

    try:
        parameters = model_facts(config.model.name_or_path, config.model.revision).parameters()
    except (ModelFactsError, OSError, ValueError):
        return []
    mlflow_root = default_tracking(RunDir(Path(run_root)))[1] if config.tracking.tracking_uri is None else None
    return check_before_start(config, Path(run_root), mlflow_root, parameters, done)


def check_before_start(config: AZRConfig, run_root: Path, mlflow_root: Path | None, parameters: int,
                       done: int = 0) -> list[str]:
    """Warnings for a disk that may fill; raises DiskSpaceError when the run clearly cannot fit
    (its peak exceeds the free space) so that nothing is started."""
    guess = estimate(config, parameters)
    guess = DiskEstimate(guess.checkpoint_bytes, guess.logged_model_bytes, guess.iteration_bytes,
                         max(guess.iterations - done, 0))
    needs: dict[Path, int] = {}
    run_fs = Path(run_root)
    needs[run_fs] = guess.run_dir_peak(config.trainer.keep_checkpoints)
    if mlflow_root is not None:
        mlflow_need = guess.mlflow_peak(config.tracking.keep_logged_models, logged_model_count(config))
        same = _same_filesystem(run_fs, mlflow_root)
        if same:
            needs[run_fs] += mlflow_need
        else:
            needs[Path(mlflow_root)] = mlflow_need
    warnings = []
    for where, need in needs.items():
        free = free_bytes(where)
        if need > free:
            raise DiskSpaceError(
                f"the run needs about {gib(need)} on the disk of {where} ({_what(config, guess)}) but "
                f"{gib(free)} is free. Free some space, put the run elsewhere (--run-dir), or lower "
                "trainer.keep_checkpoints / tracking.keep_logged_models / trainer.iterations"
            )
        if need > 0.8 * free:
            warnings.append(f"the run will use about {gib(need)} of the {gib(free)} free on the disk of {where}; "
                            "it may fill up")
    return warnings


def warn_if_short(where: Path, need: int, what: str) -> str | None:
    """Before writing `need` bytes under `where`: a warning (logged, and shown by `azr train`)
    when that would leave less than 5% of the disk free. Returns the warning."""
    usage = shutil.disk_usage(_existing(where))
    if usage.free - need >= 0.05 * usage.total:
        return None
    message = (f"disk nearly full: {what} needs about {gib(need)} under {where} and {gib(usage.free)} is free"
               + (" (it will not fit)" if need > usage.free else "")
               + "; free space, or lower trainer.keep_checkpoints / tracking.keep_logged_models")
    report_warning(message)
    return message


def report_warning(message: str) -> None:
    """To the `azr` logger and to whoever watches the run (the CLI's progress view)."""
    import logging

    from azr.pipeline.resources import get_event_hook

    logging.getLogger("azr.disk").warning(message)
    hook = get_event_hook()
    if hook is not None:
        hook("warning", {"message": message})


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _what(config: AZRConfig, guess: DiskEstimate) -> str:
    return (f"{config.trainer.iterations} iterations of ~{gib(guess.iteration_bytes)} stage files, "
            f"{config.trainer.keep_checkpoints} + 1 checkpoints of ~{gib(guess.checkpoint_bytes)}, logged models of "
            f"~{gib(guess.logged_model_bytes)}")


def _existing(path: Path) -> Path:
    probe = Path(path).resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _same_filesystem(a: Path, b: Path) -> bool:
    return _existing(a).stat().st_dev == _existing(b).stat().st_dev


def warn_before_checkpoint(checkpoint_dir: Path) -> str | None:
    """Before a checkpoint is written: the newest one's measured size is what the next needs
    (the first checkpoint was estimated by the check before the start)."""
    root = Path(checkpoint_dir)  # complete checkpoints: step-NNNNNNNN/COMPLETE (no torch import here)
    complete = sorted(p for p in root.glob("step-*") if p.name[5:].isdigit() and (p / "COMPLETE").is_file()) \
        if root.is_dir() else []
    if not complete:
        return None
    newest = complete[-1]
    return warn_if_short(checkpoint_dir, directory_bytes(newest), "the next checkpoint")
