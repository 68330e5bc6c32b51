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

from azr.pipeline.atomic_io import json_problem, parquet_problem
from azr.pipeline.registry import STAGE_SCHEMAS, ResumeCheck, Stage
from azr.pipeline.run_dir import RunDir

logger = logging.getLogger(__name__)

DAMAGED_SUFFIX = ".damaged"


def stage_file_problem(path: Path) -> str | None:
    """Why a stage file cannot be used (see artifacts.parquet_problem / json_problem), or None."""
    if path.suffix == ".parquet":
        return parquet_problem(path, STAGE_SCHEMAS.get(path.name))
    return json_problem(path)


def stage_paths(run: RunDir, step: int, stage: Stage) -> list[Path]:
    return [run.stage_path(step, name) for name in stage.files]


def set_aside(path: Path, problem: str, *, warn: bool = True) -> Path:
    """Move a damaged file out of the way (NAME.damaged, replacing an older one), with a warning."""
    target = path.with_name(path.name + DAMAGED_SUFFIX)
    os.replace(path, target)
    if warn:
        logger.warning("%s is damaged (%s): moved to %s; it is computed again", path, problem, target.name)
    return target


def stage_complete(run: RunDir, step: int, stage: Stage) -> bool:
    """The stage's files pass its resume check (`registry.ResumeCheck`): with READABLE, damaged
    ones are set aside, so the stage runs again."""
    paths = stage_paths(run, step, stage)
    if stage.resume_check is ResumeCheck.EXISTS:
        return all(path.exists() for path in paths)
    damaged = [(path, problem) for path in paths if path.exists() and (problem := stage_file_problem(path))]
    for path, problem in damaged:
        set_aside(path, problem)
    return not damaged and all(path.exists() for path in paths)
