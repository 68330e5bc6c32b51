"""Is a run directory fit to resume, and what has to be done first?

Resume works from the files alone (training.py), so they are checked against each other
before anything runs: the stage files of every iteration, the buffer log, the checkpoints and
the updates. `plan_resume` reads only Parquet footers, JSON records, checkpoint indexes and
safetensors headers (no model, no engine), so a refusal comes before the model loads and
leaves every file as it was. What it finds is of three kinds:

- intact: used as it is;
- replayable, computed again from what is left, deterministically (the stages are seeded):
  a damaged stage file of the iteration in progress (set aside; its stage runs again), a
  damaged checkpoint (the newest intact older one is loaded, the later updates are replayed
  from their scored.parquet and the checkpoint is written again), a lost update.json (its
  update replayed), a buffer log that misses steps (rebuilt from the committed iterations'
  validated and mc_rollouts files, its random state by building their prompts again, checked
  against the prompts on disk), a garbled committed.json (written again from the buffer log);
- fatal: a damaged file of a committed iteration, or a file a replay needs that is gone:
  `RunStateError`, one paragraph per file, saying which file and what to do.

Garbled records that only feed reports (metrics.json, timings.json) are set aside with a
warning; metrics.json is written again by the iteration's post-commit work.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from azr.pipeline.atomic_io import atomic_write_json, json_problem
from azr.selfplay.buffer import Buffers
from azr.pipeline.buffer_log import (
    commit_step,
    committed_steps,
    discard_steps_after,
    load_buffer_log,
    step_problems,
    step_state_path,
    write_initial,
)
from azr.config.schema import AZRConfig
from azr.engine.training.checkpoints import CheckpointInfo, checkpoint_name, checkpoint_problems, list_checkpoints
from azr.pipeline.registry import FILE_STAGES, STAGE_SCHEMAS, UPDATE, ResumeCheck, StageFile
from azr.pipeline.run_dir import RunDir, RunDirError
from azr.pipeline.stages import buffer_entries, checkpoint_due
from azr.pipeline.stage_files import DAMAGED_SUFFIX, set_aside, stage_file_problem, stage_paths

logger = logging.getLogger(__name__)

REPORT_RECORDS = ("metrics.json", "timings.json", StageFile.SAFETY_COUNTS, "eval.json")
"""JSON records of a committed iteration that only feed metrics and reports."""
BUFFER_REPLAY_FILES = (StageFile.PROPOSE_PROMPTS, StageFile.SOLVE_PROMPTS, StageFile.VALIDATED, StageFile.MC_ROLLOUTS)
"""What rebuilding one step of the buffer log reads."""
_BEFORE_UPDATE = FILE_STAGES[: FILE_STAGES.index(UPDATE)]


class RunStateError(RunDirError):
    """The run directory cannot be resumed as it is; the message names the files and what to do."""


@dataclass
class ResumePlan:
    """What resuming a run will do before its next stage runs."""

    start: int
    """The first iteration not committed: the one the run continues with."""
    checkpoint: CheckpointInfo | None = None
    """The checkpoint to load (the newest intact one the files allow); None: initial weights."""
    replay: list[int] = field(default_factory=list)
    """Iterations whose updates are replayed from scored.parquet after the checkpoint, in order."""
    write_update: list[int] = field(default_factory=list)
    """Replayed iterations whose update.json is missing or garbled: written from the replay."""
    resave: list[int] = field(default_factory=list)
    """Checkpoints the run should have (damaged or gone), written again once the replay has passed
    their step."""
    rebuild_buffer_from: int | None = None
    """The first buffer step rebuilt from the stage files (None: the log is intact)."""
    discard_buffer_after: int | None = None
    """The buffer log is cut back to this step before anything is loaded (-1: all of it)."""
    rewrite_committed: list[int] = field(default_factory=list)
    """Committed iterations whose committed.json is written again from the buffer log."""
    undo_update: bool = False
    """The iteration in progress had done its update, but a file before it was damaged: its
    update is done again after the earlier stages (the policy is restored to before it)."""
    pending_update: int | None = None
    """One-step-off (`rollout.async_level: 1`): the committed iteration whose update runs (again)
    beside the generation of `start`, which needs the weights before it; the policy is restored
    to before that update and, if it was done, its record and checkpoint are removed."""
    pending_done: bool = False
    """The pending update had run (its record or checkpoint exists): it is undone and done again."""
    set_aside: list[tuple[Path, str]] = field(default_factory=list)
    """Damaged files moved aside (NAME.damaged) before the run continues, with why."""
    warnings: list[str] = field(default_factory=list)

    @property
    def repairs(self) -> bool:
        return bool(self.write_update or self.resave or self.rebuild_buffer_from is not None
                    or self.discard_buffer_after is not None or self.rewrite_committed or self.undo_update
                    or self.set_aside or self.redo_pending_update)

    @property
    def redo_pending_update(self) -> bool:
        return self.pending_update is not None and self.pending_done


def committed_iterations(run: RunDir) -> list[int]:
    """Iterations whose commit happened: a buffer-log step, or a committed.json (the log may
    have lost the step; the record says the iteration got that far)."""
    logged = {s for s in committed_steps(run.buffer_dir) if s > 0}
    marked = {s for s in run.steps() if run.stage_path(s, StageFile.COMMITTED).exists()}
    return sorted(logged | marked)


def plan_resume(run: RunDir, config: AZRConfig) -> ResumePlan:
    """Check the run directory and decide what resuming does; raise RunStateError (naming every
    file that cannot be repaired, and what to do) instead of a plan that would lose data."""
    committed = committed_iterations(run)
    last = committed[-1] if committed else 0
    plan = ResumePlan(start=last + 1)
    fatal: list[str] = []
    gaps = [s for s in range(1, last) if s not in committed]
    if gaps:
        fatal.append(
            f"{run.root}: iteration {last} was committed, but iterations {gaps} never were (no buffer step, no "
            "committed.json): files were deleted or the directory mixes runs. Restore those iterations' files, "
            "or start a new run."
        )
    for step in committed:
        fatal += _check_committed_iteration(run, config, step, plan)
    fatal += _plan_buffer(run, plan, last)
    _check_iteration_in_progress(run, plan)
    fatal += _plan_policy(run, config, plan)
    if fatal:
        raise RunStateError("\n\n".join(fatal))
    return plan


def _check_committed_iteration(run: RunDir, config: AZRConfig, step: int, plan: ResumePlan) -> list[str]:
    fatal = []
    for name in STAGE_SCHEMAS:
        path = run.stage_path(step, name)
        problem = stage_file_problem(path) if path.exists() else None
        if problem:
            fatal.append(_committed_file_error(run, config, step, path, problem))
    committed = run.stage_path(step, StageFile.COMMITTED)
    if json_problem(committed) is not None:  # missing (killed after the buffer commit) or garbled
        plan.rewrite_committed.append(step)
        if committed.exists():
            plan.set_aside.append((committed, json_problem(committed) or ""))
            plan.warnings.append(f"{committed} is garbled: it is written again from the buffer log")
    for name in REPORT_RECORDS:
        path = run.stage_path(step, name)
        problem = json_problem(path) if path.exists() else None
        if problem:
            plan.set_aside.append((path, problem))
            plan.warnings.append(f"{path} is {problem}: set aside as {path.name}{DAMAGED_SUFFIX}"
                                 + (", so that it is written again from the stage files" if name == "metrics.json" else ""))
    return fatal


def _committed_file_error(run: RunDir, config: AZRConfig, step: int, path: Path, problem: str) -> str:
    every = config.tracking.log_parquet_every
    logged = step == 1 or step % every == 0
    source = (f"MLflow keeps a copy of this iteration's Parquet files (artifacts iterations/{step:06d}/ of the "
              f"MLflow run named in {run.info_path})" if logged else
              f"MLflow has no copy of it (Parquet files are logged for iteration 1 and every {every}th)")
    return (
        f"{path} is damaged: {problem}. Iteration {step} is committed, so resume does not compute its files again "
        f"(they came from that iteration's policy and buffers). {source}. Copy an intact version back and resume again; "
        f"if you do not need it, delete the file and resume (a missing file of a committed iteration is only "
        f"refused where the run needs it, to replay an update or the buffer log)."
    )


def _plan_buffer(run: RunDir, plan: ResumePlan, last: int) -> list[str]:
    """The buffer log must hold steps 0..last intact; a missing or damaged step is rebuilt with
    every later one, from the iterations' stage files."""
    root = run.buffer_dir
    logged = committed_steps(root)
    if last == 0:
        if logged and step_problems(root, 0):
            plan.discard_buffer_after = -1  # nothing committed yet: the initial buffers are written again
            plan.warnings.append(f"the buffer log {root} is damaged ({step_problems(root, 0)[0]}): its step 0 "
                                 "is written again")
        return []
    first = next((s for s in range(0, last + 1) if step_problems(root, s)), None)
    if first is None:
        return []
    fatal = []
    for step in range(max(first, 1), last + 1):
        for name in BUFFER_REPLAY_FILES:
            path = run.stage_path(step, name)
            if not path.exists():
                fatal.append(
                    f"{path} is missing, and the buffer log {root} must be rebuilt from iteration {first} on "
                    f"({step_problems(root, first)[0]}): that rebuild reads every committed iteration's prompts, "
                    "validated and mc_rollouts files. Restore the file (or the buffer log's files), or start a new run."
                )
    plan.rebuild_buffer_from = first
    plan.discard_buffer_after = first - 1
    plan.warnings.append(f"the buffer log {root} is damaged from step {first} on ({step_problems(root, first)[0]}): "
                         f"steps {first}-{last} are rebuilt from the committed iterations' stage files")
    return fatal


def _check_iteration_in_progress(run: RunDir, plan: ResumePlan) -> None:
    """Damaged files of the iteration in progress are set aside, so their stages run again."""
    step = plan.start
    if step not in run.steps():
        return
    for stage in FILE_STAGES:
        if stage.resume_check is ResumeCheck.EXISTS:  # a garbled update.json: the update was done
            continue
        for path in stage_paths(run, step, stage):
            problem = stage_file_problem(path) if path.exists() else None
            if problem:
                plan.set_aside.append((path, problem))
                plan.warnings.append(f"{path} is damaged ({problem}): its stage ({stage.name}) runs again")
                plan.undo_update = plan.undo_update or (stage in _BEFORE_UPDATE)
    timings = run.stage_path(step, "timings.json")
    if timings.exists() and json_problem(timings):
        plan.set_aside.append((timings, json_problem(timings) or ""))


def _plan_policy(run: RunDir, config: AZRConfig, plan: ResumePlan) -> list[str]:
    """The checkpoint to load and the updates to replay after it."""
    step = plan.start
    found = sorted((int(p.name.removeprefix("step-")), p) for p in _checkpoint_dirs(run))
    damaged = {s: problems for s, path in found if (problems := checkpoint_problems(path))}
    intact = {info.step: info for info in list_checkpoints(run.checkpoint_dir) if info.step not in damaged}
    update_path = run.stage_path(step, StageFile.UPDATE)
    update_done = update_path.exists() or step in intact
    if update_done and plan.undo_update:
        plan.warnings.append(f"iteration {step} had done its update, but a file it was computed from is damaged: "
                             "the policy goes back to before that update, which is done again")
        update_done = False
    limit = step if update_done else step - 1
    pending = _pending_update(run, config, step)
    if pending is not None:
        plan.pending_update, limit = pending, pending - 1
        plan.pending_done = run.stage_path(pending, StageFile.UPDATE).exists() or pending in intact
        if plan.pending_done:
            plan.warnings.append(f"iteration {pending}'s update was done, but iteration {step}'s generation, which "
                                 "needs the weights before it (rollout.async_level=1), was not: the policy goes "
                                 "back to before that update, which runs again beside that generation")
    usable = [s for s in intact if s <= limit]
    plan.checkpoint = intact[max(usable)] if usable else None
    done = plan.checkpoint.step if plan.checkpoint else 0
    plan.replay = list(range(done + 1, limit + 1))
    for s, problems in damaged.items():
        use = ("it is written again after replaying the updates up to it" if done < s <= limit
               else "it is not needed, and is replaced or pruned by a later checkpoint")
        plan.warnings.append(f"checkpoint {run.checkpoint_dir / checkpoint_name(s)} is damaged ({'; '.join(problems)}): "
                             f"resuming from {plan.checkpoint.path if plan.checkpoint else 'the initial weights'} "
                             f"instead; {use}")
    # the checkpoints the run had at `limit` that are gone or damaged, written again by the replay
    due = [s for s in range(1, limit + 1) if checkpoint_due(config, s, config.trainer.iterations)]
    plan.resave = [s for s in due[-config.trainer.keep_checkpoints:] if s > done and s not in intact]
    for s in [s for s in intact if s > step]:
        plan.warnings.append(f"checkpoint {intact[s].path} is of step {s}, beyond the run's files (iteration {step} "
                             "is the next to run): it is not used")
    for s in range(1, min(done, step - 1) + 1):  # updates inside the loaded checkpoint
        record = run.stage_path(s, StageFile.UPDATE)
        problem = json_problem(record)
        if problem and not (s == done and "update" in plan.checkpoint.metadata):
            plan.warnings.append(f"{record} is {problem}: the weights are intact (in {plan.checkpoint.path}), "
                                 "only that update's figures are lost")
            if record.exists():
                plan.set_aside.append((record, problem))
    fatal = []
    for s in plan.replay:
        scored = run.stage_path(s, StageFile.SCORED)
        problem = stage_file_problem(scored)
        if problem == "missing":
            fatal.append(f"{scored} is missing, and iteration {s}'s update must be replayed from it (no intact "
                         f"checkpoint of step {s} or later). Restore the file, or an intact checkpoint of step {s} "
                         "or later (checkpoints/step-NNNNNNNN/), then resume again.")
        if json_problem(run.stage_path(s, StageFile.UPDATE)) is not None:
            plan.write_update.append(s)
            if s < step:  # a committed iteration lost its update record (and no checkpoint holds it)
                plan.warnings.append(f"{run.stage_path(s, StageFile.UPDATE)} is missing or garbled: iteration {s}'s "
                                     "update is replayed from its scored.parquet and the file written again")
    return fatal


def _pending_update(run: RunDir, config: AZRConfig, step: int) -> int | None:
    """One-step-off: iteration step-1's update, if it must run beside iteration `step`'s
    generation: it is not done, or it is but that generation is not (a kill in the window)."""
    if config.rollout.async_level == 0 or step <= 1:
        return None
    if not run.stage_path(step - 1, StageFile.UPDATE).exists():
        return step - 1
    if step > config.trainer.iterations:
        return None
    generated = all(stage_file_problem(run.stage_path(step, name)) is None
                    for name in (StageFile.PROPOSALS, StageFile.SOLUTIONS))
    return None if generated else step - 1


def _checkpoint_dirs(run: RunDir) -> list[Path]:
    root = run.checkpoint_dir
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()]


def prepare_resume(run: RunDir, plan: ResumePlan) -> None:
    """The file changes the plan makes before anything loads: an undone update's record and
    checkpoint removed, the buffer log cut back to its last intact step, damaged files set aside.

    Damaged files go last: until they are gone, a resume killed in here plans the same again.
    """
    for message in plan.warnings:
        logger.warning(message)
    if plan.undo_update:
        run.stage_path(plan.start, StageFile.UPDATE).unlink(missing_ok=True)
        _drop_checkpoint(run, plan.start)
    if plan.redo_pending_update:
        assert plan.pending_update is not None
        run.stage_path(plan.pending_update, StageFile.UPDATE).unlink(missing_ok=True)
        _drop_checkpoint(run, plan.pending_update)
    if plan.discard_buffer_after is not None:  # removes the later steps' state files, then their rows
        discard_steps_after(run.buffer_dir, plan.discard_buffer_after)
    for path, problem in plan.set_aside:
        if path.exists():
            set_aside(path, problem, warn=False)  # the plan's warnings said why


def _drop_checkpoint(run: RunDir, step: int) -> None:
    """Turn the checkpoint of an undone update into the leftover of an unfinished save (which the
    next save of that step clears): it holds weights after an update that is done again."""
    path = run.checkpoint_dir / checkpoint_name(step)
    if path.is_dir():
        leftover = run.checkpoint_dir / f".tmp-{path.name}"
        shutil.rmtree(leftover, ignore_errors=True)
        os.replace(path, leftover)


def rebuild_buffers(run: RunDir, config: AZRConfig, plan: ResumePlan, wrapper: Any, count_tokens: Any) -> Buffers:
    """Replay the buffer log from `plan.rebuild_buffer_from` to the last committed iteration.

    Each step's random state is advanced by building that iteration's prompts again, as the run
    did; the prompts must match the ones on disk, or the rebuilt log would silently differ.
    """
    from azr.selfplay.iteration_prompts import build_iteration_prompts, prompts_table
    from azr.pipeline.seeding import initial_buffers

    first = plan.rebuild_buffer_from
    assert first is not None
    if first == 0:
        buffers = initial_buffers(run, config)
        write_initial(buffers, run.buffer_dir)
    else:
        buffers = load_buffer_log(run.buffer_dir, config.buffer, up_to_step=first - 1)
    for step in range(max(first, 1), plan.start):
        prompts = build_iteration_prompts(buffers, step, config, wrapper, count_tokens)
        for name, records in ((StageFile.PROPOSE_PROMPTS, prompts.propose), (StageFile.SOLVE_PROMPTS, prompts.solve)):
            stored = pq.read_table(run.stage_path(step, name))
            if not prompts_table(step, records).equals(stored):
                raise RunStateError(
                    f"rebuilding the buffer log {run.buffer_dir} at step {step} gives other prompts than "
                    f"{run.stage_path(step, name)}: the run's settings or seed files changed since, so the log cannot "
                    "be rebuilt. Restore the buffer log's files (buffer/state/, buffer/<type>/), or start a new run."
                )
        commit_step(buffers, run.buffer_dir, step, buffer_entries(run, step))
    logger.warning("rebuilt the buffer log %s: steps %d-%d", run.buffer_dir, first, plan.start - 1)
    return buffers


def write_committed_records(run: RunDir, plan: ResumePlan) -> None:
    """committed.json of the iterations that lost it, from the buffer log's state files."""
    for step in plan.rewrite_committed:
        state = json.loads(step_state_path(run.buffer_dir, step).read_text(encoding="utf-8"))
        atomic_write_json(run.stage_path(step, StageFile.COMMITTED), {"step": step, "buffer_sizes": state["sizes"]})

