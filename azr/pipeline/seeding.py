"""The seeding stage of a run (docs/algorithm.md §8.2, §8.4): before iteration 1, the base model proposes
tasks until each pool holds `rollout.batch_size x buffer.seed_batch_factor` (paper: 256).

Deduction/abduction: from the identity triplet, batches of propose prompts (abduction, then
deduction, alternating) whose references are sampled from the growing pool; the responses are
parsed with the seeding options, validated in the sandbox, and their valid tasks added,
deduplicated by exact content. Induction: from the identity problem, batches of induction
propose prompts, each showing a program drawn from the I/O pool; the fully valid proposals are
kept. Each pool is cut to the target and written as a seed file in our Parquet seed schema.

Every batch writes its prompts, responses and validation under RUN_DIR/seeding/ (atomic files;
a batch is complete when its file exists), so a killed seeding resumes at the batch it was in:
the pools are rebuilt from the files, and a batch's prompts are drawn with its own seed.
A pool given as a seed file (`buffer.seed_io_file`, `buffer.seed_induction_file`) is not seeded.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from azr.pipeline.atomic_io import atomic_write_json, write_parquet_atomic
from azr.selfplay.buffer import Buffers
from azr.pipeline.buffer_log import committed_steps, write_initial
from azr.config.schema import AZRConfig
from azr.config.loading import ConfigError
from azr.pipeline.context import RunContext
from azr.pipeline.run_dir import RunDir
from azr.selfplay.iteration import stage_seed
from azr.selfplay.prompts.paper import propose_prompt_for
from azr.selfplay.proposals import check_proposals
from azr.selfplay.task_records import InductionTask, Triplet
from azr.selfplay.seed_tasks import load_io_seeds, zero_induction_task, zero_triplet
from azr.selfplay.task_types import TaskType

logger = logging.getLogger(__name__)

SEEDING_DIR = "seeding"
IO_SEED_FILE = "seed_io.parquet"
INDUCTION_SEED_FILE = "seed_induction.parquet"
DONE_FILE = "seeding.json"
_IO_TYPES = (TaskType.ABDUCTION, TaskType.DEDUCTION)  # the original's order within a round

_PROMPTS_SCHEMA = pa.schema([("index", pa.int64()), ("task_type", pa.string()), ("prompt", pa.string()),
                             ("references", pa.string())])
_RESPONSES_SCHEMA = pa.schema([("index", pa.int64()), ("response", pa.string()), ("response_tokens", pa.int64()),
                               ("finish_reason", pa.string())])
_VALIDATED_SCHEMA = pa.schema([
    ("index", pa.int64()), ("valid", pa.bool_()), ("reason", pa.string()), ("program", pa.string()),
    ("input", pa.string()), ("output", pa.string()), ("inputs", pa.list_(pa.string())),
    ("outputs", pa.list_(pa.string())), ("message", pa.string()), ("imports", pa.list_(pa.string())),
])
IO_SEED_SCHEMA = pa.schema([("program", pa.string()), ("input", pa.string()), ("output", pa.string()),
                            ("imports", pa.list_(pa.string()))])
INDUCTION_SEED_SCHEMA = pa.schema([("program", pa.string()), ("inputs", pa.list_(pa.string())),
                                   ("outputs", pa.list_(pa.string())), ("message", pa.string()),
                                   ("imports", pa.list_(pa.string()))])


class SeedingError(ConfigError):
    """Seeding cannot reach its target; the message says what happened and what to change."""


class UnderSeededError(ConfigError):
    """A run whose buffers hold fewer tasks than its solve batch (the original asserts this)."""


@dataclass(frozen=True)
class SeedFiles:
    """Where a run's initial buffers come from: a configured file, or the seeding stage's."""

    io: Path | None
    induction: Path | None


def seeding_dir(run: RunDir) -> Path:
    return run.root / SEEDING_DIR


def seeding_target(config: AZRConfig) -> int:
    return config.rollout.batch_size * config.buffer.seed_batch_factor


def seeding_needed(run: RunDir, config: AZRConfig) -> bool:
    """Whether this run has a seeding stage still to do."""
    buffer = config.buffer
    missing = buffer.seed_io_file is None or buffer.seed_induction_file is None
    return (buffer.seeding == "model" and missing and not committed_steps(run.buffer_dir)
            and not (seeding_dir(run) / DONE_FILE).exists())


def seed_files(run: RunDir, config: AZRConfig) -> SeedFiles:
    """The seed files of the run's initial buffers (None: the zero task)."""
    done = (seeding_dir(run) / DONE_FILE).exists()
    ours = seeding_dir(run)
    io = config.buffer.seed_io_file or (ours / IO_SEED_FILE if done else None)
    induction = config.buffer.seed_induction_file or (ours / INDUCTION_SEED_FILE if done else None)
    return SeedFiles(io, induction)


def initial_buffers(run: RunDir, config: AZRConfig) -> Buffers:
    """The buffers at step 0 (seed files or zero tasks), refused when a configured task type
    starts with fewer tasks than its solve batch (unless `buffer.allow_small_buffers`)."""
    files = seed_files(run, config)
    limit = max(config.buffer.seed_limit, seeding_target(config) if (seeding_dir(run) / DONE_FILE).exists() else 1)
    buffer_config = config.buffer.model_copy(update={"seed_io_file": files.io, "seed_induction_file": files.induction,
                                                     "seed_limit": limit})
    buffers = Buffers.initial(buffer_config, config.seed)
    batch = config.rollout.batch_size
    small = {t.value: len(buffers[t]) for t in config.tasks.types if len(buffers[t]) < batch}
    if small and not config.buffer.allow_small_buffers:
        sizes = ", ".join(f"{name}: {size}" for name, size in small.items())
        raise UnderSeededError(
            f"the buffers would start with fewer tasks than a solve batch (rollout.batch_size={batch}): {sizes}. "
            "Seed them: buffer.seeding: model (the paper's seeding stage, the default), or seed files "
            "(buffer.seed_io_file, buffer.seed_induction_file); or set buffer.allow_small_buffers: true "
            "to start anyway (the solver then trains on copies of the same few tasks)"
        )
    return buffers


# ------------------------------------------------------------------------------- the stage


def run_seeding(res: RunContext) -> dict[str, Any]:
    """Fill the pools to the target, write the seed files, and set the run's buffers.

    Returns a summary (pool sizes, batches, valid rates). Does nothing when the run has no
    seeding stage to do (seed files given, `buffer.seeding: none`, or already seeded).
    """
    run, config = res.run, res.config
    if not seeding_needed(run, config):
        if res.buffers is None:
            res.buffers = _start_buffers(run, config)
        return {}
    directory = seeding_dir(run)
    directory.mkdir(parents=True, exist_ok=True)
    for leftover in directory.glob(".*.tmp"):  # a write that a kill -9 interrupted (never renamed)
        leftover.unlink(missing_ok=True)
    target = seeding_target(config)
    res.emit("stage_started", step=0, stage="seeding")
    summary: dict[str, Any] = {"target": target}
    if config.buffer.seed_io_file is not None:
        io_pool = sources = load_io_seeds(config.buffer.seed_io_file, config.buffer.seed_limit)
    else:
        sources, summary["io"] = _seed_io(res, target)
        io_pool = sources[:target]
        write_parquet_atomic(pa.Table.from_pylist([_triplet_row(t) for t in io_pool], schema=IO_SEED_SCHEMA),
                             directory / IO_SEED_FILE)
    if config.buffer.seed_induction_file is None:
        # Induction prompts draw from the whole I/O pool, before it is cut to the target (as the original).
        induction_pool, summary["induction"] = _seed_induction(res, target, sources)
        write_parquet_atomic(pa.Table.from_pylist([_induction_row(t) for t in induction_pool],
                                                  schema=INDUCTION_SEED_SCHEMA), directory / INDUCTION_SEED_FILE)
    atomic_write_json(directory / DONE_FILE, summary)
    tracker = res.tracker
    if tracker is not None:
        for name in (IO_SEED_FILE, INDUCTION_SEED_FILE, DONE_FILE):
            if (directory / name).exists():
                tracker.client.log_artifact(tracker.run_id, str(directory / name), SEEDING_DIR)
    res.buffers = _start_buffers(run, config)
    res.emit("stage_finished", step=0, stage="seeding")
    return summary


def _start_buffers(run: RunDir, config: AZRConfig) -> Buffers:
    buffers = initial_buffers(run, config)
    write_initial(buffers, run.buffer_dir)
    return buffers


def _seed_io(res: RunContext, target: int) -> tuple[list[Triplet], dict[str, Any]]:
    """The deduction/abduction pool: propose batches until it holds `target` distinct tasks
    (returned whole: the last batch may overshoot the target)."""
    pool: list[Triplet] = [zero_triplet()]
    seen = {_key(pool[0])}
    batch, proposed, valid = 0, 0, 0
    while len(pool) < target:
        _check_limit(res.config, batch, "deduction/abduction", len(pool), target)
        task_type = _IO_TYPES[batch % 2]
        prefix = f"io_{batch:04d}"
        prompts = _prompts(res, prefix, lambda rng, tt=task_type: _io_prompt(res, tt, pool, rng), task_type)
        rows = _validated(res, prefix, task_type, prompts)
        for row in rows:
            if row["valid"]:
                task = Triplet(row["program"], row["input"], row["output"], _strings(row["imports"]))
                if _key(task) not in seen:
                    seen.add(_key(task))
                    pool.append(task)
        proposed += len(rows)
        valid += sum(bool(r["valid"]) for r in rows)
        _progress(res, "deduction/abduction", batch, len(pool), target, valid / max(proposed, 1))
        batch += 1
    return pool, {"batches": batch, "proposed": proposed, "valid": valid, "size": min(len(pool), target)}


def _seed_induction(res: RunContext, target: int, io_pool: list[Triplet]) -> tuple[list[InductionTask], dict[str, Any]]:
    """The induction pool: from the identity problem, induction proposals over I/O-pool programs."""
    pool: list[InductionTask] = [zero_induction_task()]
    batch, proposed, valid = 0, 0, 0
    while len(pool) < target:
        _check_limit(res.config, batch, "induction", len(pool), target)
        prefix = f"induction_{batch:04d}"
        prompts = _prompts(res, prefix, lambda rng: _induction_prompt(res, io_pool, rng), TaskType.INDUCTION)
        rows = _validated(res, prefix, TaskType.INDUCTION, prompts)
        for row in rows:
            if row["valid"]:
                pool.append(InductionTask(row["program"], _strings(row["inputs"]), _strings(row["outputs"]),
                                          row["message"], _strings(row["imports"])))
        proposed += len(rows)
        valid += sum(bool(r["valid"]) for r in rows)
        _progress(res, "induction", batch, len(pool), target, valid / max(proposed, 1))
        batch += 1
    return pool[:target], {"batches": batch, "proposed": proposed, "valid": valid, "size": min(len(pool), target)}


def _check_limit(config: AZRConfig, batch: int, pool: str, size: int, target: int) -> None:
    if batch >= config.buffer.seed_max_batches:
        raise SeedingError(
            f"seeding the {pool} pool reached {size} of {target} tasks in buffer.seed_max_batches="
            f"{config.buffer.seed_max_batches} batches: the model rarely proposes a valid task. Raise "
            "buffer.seed_max_batches, give seed files (buffer.seed_io_file, buffer.seed_induction_file), or "
            "set buffer.seeding: none with buffer.allow_small_buffers: true"
        )


def _progress(res: RunContext, pool: str, batch: int, size: int, target: int, valid_rate: float) -> None:
    res.emit("seeding_progress", pool=pool, batch=batch, size=min(size, target), target=target)
    tracker = res.tracker
    if tracker is not None:
        name = "io" if pool != "induction" else "induction"
        tracker.log_metrics(batch, {f"seeding/{name}_pool": float(min(size, target)),
                                    f"seeding/{name}_valid_rate": float(valid_rate)})


def _key(task: Triplet) -> str:
    """Exact content, as the original deduplicated seeds by their JSON."""
    return json.dumps([task.program, task.input, task.output, list(task.imports)])


def _io_prompt(res: RunContext, task_type: TaskType, pool: list[Triplet], rng: np.random.Generator) -> tuple[str, list[Triplet]]:
    count = min(res.config.tasks.references, len(pool))
    references = [pool[i] for i in rng.choice(len(pool), size=count, replace=False)] if count else []
    return res.wrapper.wrap(propose_prompt_for(task_type, references, res.config.tasks)), references


def _induction_prompt(res: RunContext, io_pool: list[Triplet], rng: np.random.Generator) -> tuple[str, list[Triplet]]:
    source = io_pool[int(rng.integers(len(io_pool)))]
    return res.wrapper.wrap(propose_prompt_for(TaskType.INDUCTION, source.program, res.config.tasks)), [source]


def _prompts(res: RunContext, prefix: str, make: Any, task_type: TaskType) -> pd.DataFrame:
    """The batch's prompts (drawn with the batch's own seed; over-long ones redrawn)."""
    path = seeding_dir(res.run) / f"{prefix}_prompts.parquet"
    if path.exists():
        return pd.read_parquet(path)
    config = res.config
    rng = np.random.default_rng(stage_seed(config.seed, 0, f"seeding:{prefix}"))
    rows = []
    for index in range(config.rollout.batch_size):
        for _ in range(config.buffer.prompt_resample_tries):
            prompt, references = make(rng)
            if res.count_tokens(prompt) <= config.rollout.content_max_tokens:
                break
        else:
            raise SeedingError(
                f"every seeding prompt drawn in {config.buffer.prompt_resample_tries} tries exceeded "
                f"rollout.content_max_tokens={config.rollout.content_max_tokens}; raise it or lower tasks.references"
            )
        rows.append({"index": index, "task_type": task_type.value, "prompt": prompt,
                     "references": json.dumps([_triplet_row(r) for r in references])})
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=_PROMPTS_SCHEMA), path)
    return pd.read_parquet(path)


def _validated(res: RunContext, prefix: str, task_type: TaskType, prompts: pd.DataFrame) -> list[dict]:
    """The batch's responses (generated once, by the base model) and their validation."""
    from azr.engine.api import SamplingSettings

    directory = seeding_dir(res.run)
    validated_path = directory / f"{prefix}_validated.parquet"
    if validated_path.exists():
        return pd.read_parquet(validated_path).to_dict("records")
    responses_path = directory / f"{prefix}_responses.parquet"
    if not responses_path.exists():
        settings = SamplingSettings.from_rollout(res.config.rollout, seed=stage_seed(res.config.seed, 0, f"seeding:{prefix}"))
        completions = [c[0] for c in res.policy.generate(prompts["prompt"].tolist(), settings)]
        rows = [{"index": int(i), "response": c.text, "response_tokens": len(c.token_ids), "finish_reason": c.finish_reason}
                for i, c in zip(prompts["index"], completions, strict=True)]
        write_parquet_atomic(pa.Table.from_pylist(rows, schema=_RESPONSES_SCHEMA), responses_path)
    responses = pd.read_parquet(responses_path)["response"].tolist()
    sources = None
    if task_type is TaskType.INDUCTION:
        sources = [_source(json.loads(text)[0]) for text in prompts["references"]]
    outcomes = check_proposals(task_type, responses, res.config, res.executor, sources=sources,
                               prefix=res.wrapper.response_prefix, seeding=True)
    rows = []
    for index, outcome in zip(prompts["index"], outcomes):
        task = outcome.task
        row = {"index": int(index), "valid": task is not None, "reason": outcome.validation.label,
               "program": None, "input": None, "output": None, "inputs": None, "outputs": None,
               "message": None, "imports": None}
        if isinstance(task, Triplet):
            row.update(_triplet_row(task))
        elif isinstance(task, InductionTask):
            row.update(_induction_row(task))
        rows.append(row)
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=_VALIDATED_SCHEMA), validated_path)
    return rows


def _strings(value: Any) -> tuple[str, ...]:
    """A list column as read back from Parquet (an array, or None)."""
    return () if value is None else tuple(str(item) for item in value)


def _source(row: dict) -> Triplet:
    return Triplet(row["program"], row["input"], row["output"], tuple(row["imports"]))


def _triplet_row(task: Triplet) -> dict:
    return {"program": task.program, "input": task.input, "output": task.output, "imports": list(task.imports)}


def _induction_row(task: InductionTask) -> dict:
    return {"program": task.program, "inputs": list(task.inputs), "outputs": list(task.outputs),
            "message": task.message, "imports": list(task.imports)}
