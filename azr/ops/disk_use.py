"""How much disk a run needs, and a check against the free space before it is spent.

What a run writes (docs/memory-and-disk.md; figures in docs/benchmarks.md): per iteration its stage files and their MLflow samples
(growing with batch size and response length); at every checkpoint the checkpoint itself (the
export in the compute dtype, plus the training state: three copies of the parameters in the
master dtype); every `tracking.log_checkpoint_every` iterations a logged MLflow model (a copy
of the export). Checkpoints are pruned to `trainer.keep_checkpoints` (one more exists while a
new one is written) and logged models to `tracking.keep_logged_models`, so what the run holds
at once is bounded.

The free space is read with `shutil.disk_usage`: a run that clearly cannot fit is refused before
it starts, one that may fill the disk is warned of, and each checkpoint and logged model is
preceded by a warning when writing it would leave the disk nearly full.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from azr.config.schema import AZRConfig
from azr.ops.cpu_features import resolved_dtype

# Measured with benchmarks/disk_use.py (docs/benchmarks.md, "Disk use of a run"): the stage files of one iteration hold
# about this much per sequence besides its response (the prompt text dominates: references and
# the worked example), and each response token costs its text and its token id.
PROMPT_BYTES_PER_SEQUENCE = 8_000
RESPONSE_BYTES_PER_TOKEN = 8
# The training state of a checkpoint (torch.distributed.checkpoint) holds three copies of the
# parameters in the master dtype (weights, AdamW's two moments); a tied embedding is written
# once more under the LM head's name, in the state and in the export (measured: cpu preset
# 1729 MB state + 326 MB bf16 export for 134.5 M parameters with a 28.3 M tied embedding).
TRAINING_STATE_COPIES = 3
SAFETY_FACTOR = 1.2  # tokenizer files, metadata, MLflow's own files, the filesystem's blocks


class DiskSpaceError(RuntimeError):
    """The disk cannot hold what the run will write; the message says how much and what to change."""


@dataclass(frozen=True)
class DiskEstimate:
    checkpoint_bytes: int  # one checkpoint directory
    logged_model_bytes: int  # one logged MLflow model
    iteration_bytes: int  # stage files of one iteration, every response at full length (an upper bound)
    iterations: int  # iterations still to run


def _bytes_per_parameter(config: AZRConfig) -> tuple[int, int]:
    """(export, master) bytes per parameter, as the engine writes them."""
    half = resolved_dtype(config.model.dtype, on_gpu=config.trainer.gpus > 0) in ("bfloat16", "float16")
    export = 2 if half else 4
    master = 4 if config.model.master_dtype == "float32" else export
    return export, master


def estimate(config: AZRConfig, parameters: int, done: int = 0, tied: int = 0) -> DiskEstimate:
    """The disk a run of `config` writes, for a model of `parameters` parameters (`tied` of them
    a tied embedding, written twice), `done` iterations of which are already on disk."""
    export, master = _bytes_per_parameter(config)
    groups = config.rollout.batch_size * len(config.tasks.types)
    sequences = groups * 2 + groups * config.rollout.mc_samples  # propose + solve, Monte-Carlo solves at most
    per_sequence = PROMPT_BYTES_PER_SEQUENCE + RESPONSE_BYTES_PER_TOKEN * config.rollout.max_new_tokens
    return DiskEstimate(
        checkpoint_bytes=int(((parameters + tied) * export + (TRAINING_STATE_COPIES * parameters + tied) * master)
                             * SAFETY_FACTOR),
        logged_model_bytes=int((parameters + tied) * export * SAFETY_FACTOR),
        iteration_bytes=sequences * per_sequence,
        iterations=max(config.trainer.iterations - done, 0),
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
    from azr.ops.model_facts import ModelFactsError, model_facts
    from azr.pipeline.run_dir import RunDir, default_tracking

    try:
        facts = model_facts(config.model.name_or_path, config.model.revision)
    except (ModelFactsError, OSError, ValueError):
        return []
    mlflow_root = default_tracking(RunDir(Path(run_root)))[1] if config.tracking.tracking_uri is None else None
    tied = facts.vocab * facts.hidden if facts.tied_embeddings else 0
    return check_before_start(config, Path(run_root), mlflow_root, facts.parameters(), done, tied)


def check_before_start(config: AZRConfig, run_root: Path, mlflow_root: Path | None, parameters: int,
                       done: int = 0, tied: int = 0) -> list[str]:
    """Raises DiskSpaceError when the run clearly cannot fit: what it holds at once however
    short its responses (the kept checkpoints and the one being written, the kept logged models
    and the one being logged, one iteration's stage files) exceeds the free space; nothing is
    started then. Returns a warning when its peak, with every response at full length and the
    stage files of every iteration to run, would take over 80% of the free space."""
    guess = estimate(config, parameters, done, tied)
    run_root = Path(run_root)
    kept_models = min(logged_model_count(config), (config.tracking.keep_logged_models or 10**9) + 1)
    # per disk: (fixed bytes, peak bytes)
    disks: dict[Path, list[int]] = {run_root: [guess.checkpoint_bytes * (config.trainer.keep_checkpoints + 1)
                                               + guess.iteration_bytes, 0]}
    disks[run_root][1] = disks[run_root][0] + guess.iteration_bytes * max(guess.iterations - 1, 0)
    if mlflow_root is not None:
        where = run_root if _same_filesystem(run_root, mlflow_root) else Path(mlflow_root)
        totals = disks.setdefault(where, [0, 0])
        totals[0] += guess.logged_model_bytes * kept_models
        totals[1] += guess.logged_model_bytes * kept_models
    warnings = []
    for where, (fixed, peak) in disks.items():
        free = free_bytes(where)
        if fixed > free:
            raise DiskSpaceError(_refusal(config, guess, fixed, free, where))
        if peak > 0.8 * free:
            warnings.append(f"the run may use up to {gib(peak)} of the {gib(free)} free on the disk of {where} "
                            f"({_what(config, guess)}); it may fill up")
    return warnings


def _refusal(config: AZRConfig, guess: DiskEstimate, need: int, free: int, where: Path) -> str:
    return (f"the run needs at least {gib(need)} on the disk of {where} ({_what(config, guess)}) but only "
            f"{gib(free)} is free. Free some space, put the run elsewhere (--run-dir), or lower "
            "trainer.keep_checkpoints / tracking.keep_logged_models")


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

    from azr.pipeline.context import get_event_hook

    logging.getLogger("azr.disk").warning(message)
    hook = get_event_hook()
    if hook is not None:
        hook("warning", {"message": message})


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _what(config: AZRConfig, guess: DiskEstimate) -> str:
    return (f"{config.trainer.keep_checkpoints} + 1 checkpoints of ~{gib(guess.checkpoint_bytes)}, logged models of "
            f"~{gib(guess.logged_model_bytes)}, {guess.iterations} iterations of at most "
            f"~{gib(guess.iteration_bytes)} stage files")


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
