"""Whether a stage's files can be trusted, checked where they are read.

A stage counts as done when its files exist, but a full disk or a truncating network file
system can leave a file that exists and cannot be read (0 bytes, no Parquet footer, another
schema). Such a file of the iteration in progress is moved aside (NAME.damaged, kept for a
look) and its stage computes it again; the stages are seeded, so the new file is the one the
run would have written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pyarrow as pa

from azr.pipeline.atomic_io import json_problem, parquet_problem
from azr.pipeline.run_dir import STAGE_FILES, RunDir
from azr.pipeline.schemas import (
    MC_ROLLOUTS_SCHEMA,
    PROMPT_SCHEMA,
    PROPOSALS_SCHEMA,
    SAFETY_SCHEMA,
    SCORED_SCHEMA,
    SOLUTIONS_SCHEMA,
    VALIDATED_SCHEMA,
)

logger = logging.getLogger(__name__)

STAGE_SCHEMAS: dict[str, pa.Schema] = {
    "propose_prompts.parquet": PROMPT_SCHEMA,
    "solve_prompts.parquet": PROMPT_SCHEMA,
    "proposals.parquet": PROPOSALS_SCHEMA,
    "validated.parquet": VALIDATED_SCHEMA,
    "mc_rollouts.parquet": MC_ROLLOUTS_SCHEMA,
    "solutions.parquet": SOLUTIONS_SCHEMA,
    "safety.parquet": SAFETY_SCHEMA,
    "scored.parquet": SCORED_SCHEMA,
}
COMPANIONS: dict[str, tuple[str, ...]] = {"safety": ("safety.json",)}
"""Files a stage writes beside its marker file, checked with it."""
DAMAGED_SUFFIX = ".damaged"


def stage_file_problem(path: Path) -> str | None:
    """Why a stage file cannot be used (see artifacts.parquet_problem / json_problem), or None."""
    if path.suffix == ".parquet":
        return parquet_problem(path, STAGE_SCHEMAS.get(path.name))
    return json_problem(path)


def stage_paths(run: RunDir, step: int, stage: str) -> list[Path]:
    return [run.stage_path(step, name) for name in (*STAGE_FILES[stage], *COMPANIONS.get(stage, ()))]


def set_aside(path: Path, problem: str, *, warn: bool = True) -> Path:
    """Move a damaged file out of the way (NAME.damaged, replacing an older one), with a warning."""
    target = path.with_name(path.name + DAMAGED_SUFFIX)
    os.replace(path, target)
    if warn:
        logger.warning("%s is damaged (%s): moved to %s; it is computed again", path, problem, target.name)
    return target


def stage_complete(run: RunDir, step: int, stage: str) -> bool:
    """All of the stage's files exist and can be read; damaged ones are set aside, so the stage
    runs again. The update's update.json only has to exist: it marks an optimizer step taken,
    which is never taken twice (resume repairs a damaged one, see run_state.py)."""
    paths = stage_paths(run, step, stage)
    if stage == "update":
        return all(path.exists() for path in paths)
    damaged = [(path, problem) for path in paths if path.exists() and (problem := stage_file_problem(path))]
    for path, problem in damaged:
        set_aside(path, problem)
    return not damaged and all(path.exists() for path in paths)
