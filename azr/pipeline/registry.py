"""The one table of an iteration's stages: name, function, files read and written (with their
Parquet schemas), retries, and in which layout of generation calls each runs.

Everything that knows the stages derives from this table: the Prefect tasks (tasks/stages.py),
the resume checks (stage_files.py, resume.py), the run-directory layout (run_dir.py), the
stage summaries (stage_summary.py) and the in-process runner (stages.run_iteration). Stage
file names are defined here and nowhere else (tests/unit/test_registry.py checks it).

The table imports no stage code: `Stage.function` finds the stage's function by name in
`azr.pipeline.stages` when it is called, so that module can use the names defined here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from importlib import import_module
from typing import Any

import pyarrow as pa

from azr.pipeline.schemas import (
    MC_ROLLOUTS_SCHEMA,
    PROMPT_SCHEMA,
    PROPOSALS_SCHEMA,
    SAFETY_SCHEMA,
    SCORED_SCHEMA,
    SOLUTIONS_SCHEMA,
    VALIDATED_SCHEMA,
)


class StageFile(StrEnum):
    """The files stages write into RUN_DIR/iterations/NNNNNN/ (a str: use it as a file name)."""

    PROPOSE_PROMPTS = "propose_prompts.parquet"
    SOLVE_PROMPTS = "solve_prompts.parquet"
    PROPOSALS = "proposals.parquet"
    VALIDATED = "validated.parquet"
    MC_ROLLOUTS = "mc_rollouts.parquet"
    SOLUTIONS = "solutions.parquet"
    SAFETY_COUNTS = "safety.json"
    SAFETY = "safety.parquet"
    SCORED = "scored.parquet"
    UPDATE = "update.json"
    COMMITTED = "committed.json"


class Layout(Enum):
    """How an iteration calls the engine for its propose and solve batches (`rollout.merge_calls`)."""

    SEPARATE = "separate"
    """One call per batch: `propose`, then `solve` after the Monte-Carlo rollouts."""
    MERGED = "merged"
    """Both batches in one call (`generate_propose_solve`); the same stage files."""


class ResumeCheck(Enum):
    """When a stage counts as done, so that resuming skips it."""

    READABLE = "readable"
    """Every file exists and can be read; a damaged one is set aside and the stage runs again."""
    EXISTS = "exists"
    """Every file exists: the update's record marks an optimizer step taken, never taken twice
    (resume repairs a damaged record from the checkpoint or a replay, resume.py)."""


BOTH = (Layout.SEPARATE, Layout.MERGED)

StageFunction = Callable[[Any, int], None]
"""A stage: (the run's context, the iteration) -> None; it writes its files."""


@dataclass(frozen=True)
class Stage:
    name: str
    writes: Mapping[StageFile, pa.Schema | None]
    """The files it writes, in the order it writes them, with their schema (None: JSON). A stage
    writes its completion marker last (the last file)."""
    reads: tuple[StageFile, ...] = ()
    """The files of earlier stages it reads (the data edges of the Prefect UI)."""
    retries: int = 0
    """Prefect retries: only where a second attempt is safe (a pure function of the files)."""
    layouts: tuple[Layout, ...] = BOTH
    always_runs: bool = False
    """Run even when its files are complete: prompt building advances the buffers' random
    state exactly as the first attempt did (it writes only missing files)."""
    resume_check: ResumeCheck = ResumeCheck.READABLE
    merges: tuple[str, ...] = ()
    """The stages whose work it does in one piece (their files, their seeds); () for a stage of its own."""

    @property
    def function(self) -> StageFunction:
        """The function that computes it: `azr.pipeline.stages.<name>`."""
        return getattr(import_module("azr.pipeline.stages"), self.name)

    @property
    def task_name(self) -> str:
        """Its Prefect task's name (build-prompts)."""
        return self.name.replace("_", "-")

    @property
    def files(self) -> tuple[StageFile, ...]:
        return tuple(self.writes)


def _merged(name: str, *parts: Stage) -> Stage:
    """A stage that does the work of `parts` in one piece: their files, read and written."""
    writes = {file: schema for part in parts for file, schema in part.writes.items()}
    reads = tuple(dict.fromkeys(file for part in parts for file in part.reads if file not in writes))
    return Stage(name, writes, reads, layouts=(Layout.MERGED,), merges=tuple(part.name for part in parts))


F = StageFile
BUILD_PROMPTS = Stage("build_prompts", {F.PROPOSE_PROMPTS: PROMPT_SCHEMA, F.SOLVE_PROMPTS: PROMPT_SCHEMA}, always_runs=True)
PROPOSE = Stage("propose", {F.PROPOSALS: PROPOSALS_SCHEMA}, (F.PROPOSE_PROMPTS,), layouts=(Layout.SEPARATE,))
SOLVE = Stage("solve", {F.SOLUTIONS: SOLUTIONS_SCHEMA}, (F.SOLVE_PROMPTS,), layouts=(Layout.SEPARATE,))
GENERATE_PROPOSE_SOLVE = _merged("generate_propose_solve", PROPOSE, SOLVE)
VALIDATE = Stage("validate", {F.VALIDATED: VALIDATED_SCHEMA}, (F.PROPOSALS, F.PROPOSE_PROMPTS), retries=2)
MC_ROLLOUTS = Stage("mc_rollouts", {F.MC_ROLLOUTS: MC_ROLLOUTS_SCHEMA}, (F.VALIDATED,))
SAFETY = Stage("safety", {F.SAFETY_COUNTS: None, F.SAFETY: SAFETY_SCHEMA}, (F.PROPOSALS, F.MC_ROLLOUTS, F.SOLUTIONS),
               retries=1)
REWARDS = Stage("rewards", {F.SCORED: SCORED_SCHEMA},
                (F.PROPOSALS, F.VALIDATED, F.MC_ROLLOUTS, F.SOLUTIONS, F.SAFETY), retries=1)
UPDATE = Stage("update", {F.UPDATE: None}, (F.SCORED,), resume_check=ResumeCheck.EXISTS)
COMMIT = Stage("commit", {F.COMMITTED: None}, (F.VALIDATED, F.MC_ROLLOUTS))
del F

STAGES: tuple[Stage, ...] = (BUILD_PROMPTS, PROPOSE, GENERATE_PROPOSE_SOLVE, VALIDATE, MC_ROLLOUTS, SOLVE, SAFETY,
                             REWARDS, UPDATE, COMMIT)
"""Every stage, in the order an iteration runs those of its layout."""

FILE_STAGES: tuple[Stage, ...] = tuple(stage for stage in STAGES if not stage.merges)
"""The stages that own files (every layout writes the same files): the run directory's layout."""

STAGE_SCHEMAS: dict[StageFile, pa.Schema] = {
    file: schema for stage in FILE_STAGES for file, schema in stage.writes.items() if schema is not None
}
"""Every Parquet stage file with its schema, in the order an iteration writes them."""

LAST_STAGE = COMMIT
"""Its files mark an iteration complete."""


def stage_named(name: str) -> Stage:
    """The stage called `name`; a KeyError names the stages there are."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"no stage {name!r}; the stages are {', '.join(s.name for s in STAGES)}")


def parts_of(stage: Stage) -> tuple[Stage, ...]:
    """The file-owning stages whose work `stage` does: itself, or those it merges."""
    return tuple(stage_named(name) for name in stage.merges) or (stage,)


def stages_for(merge_calls: bool) -> tuple[Stage, ...]:
    """An iteration's stages in order, for `rollout.merge_calls`."""
    layout = Layout.MERGED if merge_calls else Layout.SEPARATE
    return tuple(stage for stage in STAGES if layout in stage.layouts)


def overlap_phases(merge_calls: bool) -> tuple[tuple[Stage, ...], tuple[Stage, ...], tuple[Stage, ...]]:
    """One-step-off order (`rollout.async_level: 1`, docs/algorithm.md §14.4): (before, generation,
    after). `generation` (the propose and solve batches) runs beside the previous iteration's
    update; `after` ends with the commit, and this iteration's own update is left for the next
    one's window (or the end of the run)."""
    stages = [stage for stage in stages_for(merge_calls) if stage is not UPDATE]
    generation = tuple(stage for stage in stages if stage in (PROPOSE, SOLVE, GENERATE_PROPOSE_SOLVE))
    before = tuple(stage for stage in stages[:stages.index(generation[0])])
    after = tuple(stage for stage in stages if stage not in generation and stage not in before)
    return before, generation, after


def writer_of(file: StageFile) -> Stage:
    """The file-owning stage that writes `file`."""
    return next(stage for stage in FILE_STAGES if file in stage.writes)
