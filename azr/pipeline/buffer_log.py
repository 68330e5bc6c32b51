"""The append-only on-disk log of a run's task buffers (RUN_DIR/buffer/), and replaying it.

One Parquet file per task type and step plus a state file (the sampling Generator's state and
the buffer sizes) written last. A step counts as committed once its state file exists, so a
kill between files leaves at most an uncommitted step that loading ignores. The buffers
themselves, and every sampling decision, live in azr/selfplay/buffer.py, which does no I/O.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from azr.config.schema import BufferConfig
from azr.pipeline.atomic_io import PathLike, atomic_write_json, json_problem, parquet_problem, write_parquet_atomic
from azr.pipeline.schemas import INDUCTION_SCHEMA, TRIPLET_SCHEMA
from azr.selfplay.buffer import ENTRY_CLASS, Buffers, BufferStoreError
from azr.selfplay.task_records import BufferEntry
from azr.selfplay.task_types import TaskType

SCHEMAS: dict[TaskType, pa.Schema] = {
    TaskType.DEDUCTION: TRIPLET_SCHEMA,
    TaskType.ABDUCTION: TRIPLET_SCHEMA,
    TaskType.INDUCTION: INDUCTION_SCHEMA,
}
STATE_DIR = "state"
_STEP_FILE = re.compile(r"^step_(\d{6,})\.(json|parquet)$")
_STATE_FORMAT = 1


def commit_step(buffers: Buffers, directory: PathLike, step: int,
                new_entries_by_type: dict[TaskType, list[BufferEntry]]) -> None:
    """Add step `step`'s valid proposals to `buffers` and append them to the log.

    Every task type gets a Parquet file (empty if it added nothing) holding all entries
    passed, including those the cap drops, so replay reproduces the counters. The state
    file (RNG state) is written last: it marks the step as committed.
    """
    root = Path(directory)
    _check_uncommitted(root, step)
    added = buffers.add_step(step, new_entries_by_type)
    _write_step(buffers, root, step, added)


def write_initial(buffers: Buffers, directory: PathLike) -> None:
    """Persist step 0 (the seeds) so a run can be replayed from its very start."""
    if buffers.step != 0 or not buffers.seed_entries:
        raise BufferStoreError(
            "write_initial() needs buffers fresh from Buffers.initial(), before any later "
            f"step (newest step here: {buffers.step})"
        )
    root = Path(directory)
    _check_uncommitted(root, 0)
    _write_step(buffers, root, 0, buffers.seed_entries)


def load_buffer_log(directory: PathLike, config: BufferConfig, up_to_step: int | None = None) -> Buffers:
    """Rebuild the buffers by replaying committed steps, and restore the RNG state.

    Replays every step with a state file up to the newest one (or the newest at or before
    `up_to_step`); files of uncommitted steps are ignored. Sampling afterwards continues
    exactly as the uninterrupted run did after committing that step.
    """
    root = Path(directory)
    steps = [s for s in committed_steps(root) if up_to_step is None or s <= up_to_step]
    if not steps:
        limit = "" if up_to_step is None else f" at or before step {up_to_step}"
        raise BufferStoreError(f"{root}: no committed buffer step{limit} to load")
    buffers = Buffers(config, np.random.default_rng())
    for step in steps:
        buffers.add_step(step, _read_step_entries(root, step))
    state = _read_state(root, steps[-1])
    _check_sizes(buffers, root, state)
    buffers.rng.bit_generator.state = state["rng_state"]
    return buffers


def _write_step(buffers: Buffers, root: Path, step: int, entries_by_type: dict[TaskType, list[BufferEntry]]) -> None:
    for task_type in TaskType:
        table = entries_to_table(task_type, entries_by_type.get(task_type, []))
        write_parquet_atomic(table, step_parquet_path(root, task_type, step))
    state = {
        "format": _STATE_FORMAT,
        "step": step,
        "rng_state": buffers.rng.bit_generator.state,
        "sizes": {str(t): len(buffers[t]) for t in TaskType},
    }
    atomic_write_json(step_state_path(root, step), state)


def _check_sizes(buffers: Buffers, root: Path, state: dict[str, Any]) -> None:
    """Replay must rebuild the buffers the run had; a mismatch means a changed cap or a
    damaged log, and sampling would silently diverge."""
    actual = {str(t): len(buffers[t]) for t in TaskType}
    if state.get("sizes", actual) != actual:
        raise BufferStoreError(
            f"{root}: replaying up to step {state['step']} gives buffer sizes {actual}, but "
            f"the run had {state['sizes']}; load with the run's buffer config (max_size, "
            "cap_policy)"
        )


def _check_uncommitted(root: Path, step: int) -> None:
    if step_state_path(root, step).exists():
        raise BufferStoreError(
            f"{root}: step {step} is already committed; refusing to write its rows twice. "
            "Use a new directory, or discard_steps_after() to roll the log back first"
        )


def entries_to_table(task_type: TaskType, entries: Sequence[BufferEntry]) -> pa.Table:
    """Rows of one task type under its explicit schema (schemas.TRIPLET/INDUCTION_SCHEMA)."""
    schema = SCHEMAS[task_type]
    rows = [_entry_row(entry) for entry in entries]
    return pa.Table.from_pylist(rows, schema=schema)


def entries_from_table(task_type: TaskType, table: pa.Table) -> list[BufferEntry]:
    """Inverse of `entries_to_table`; list columns become tuples as in the records."""
    entry_class = ENTRY_CLASS[task_type]
    list_fields = {"imports", "inputs", "outputs"}
    return [
        entry_class(**{k: tuple(v) if k in list_fields else v for k, v in row.items()})
        for row in table.to_pylist()
    ]


def _entry_row(entry: BufferEntry) -> dict[str, Any]:
    row = dataclasses.asdict(entry)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in row.items()}


def step_parquet_path(root: PathLike, task_type: TaskType, step: int) -> Path:
    return Path(root) / str(task_type) / f"step_{step:06d}.parquet"


def step_state_path(root: PathLike, step: int) -> Path:
    return Path(root) / STATE_DIR / f"step_{step:06d}.json"


def committed_steps(root: PathLike) -> list[int]:
    """Steps whose state file exists, ascending: the steps a load may replay."""
    state_dir = Path(root) / STATE_DIR
    if not state_dir.is_dir():
        return []
    return sorted(_step_of(path) for path in state_dir.iterdir() if _is_step_file(path, "json"))


def step_problems(root: PathLike, step: int) -> list[str]:
    """What keeps a committed step of the log from being replayed (its state file or one of
    its Parquet files missing, torn or of another schema); empty when it is intact."""
    problems = []
    state = step_state_path(root, step)
    problem = json_problem(state)
    if problem is None:
        state_record = json.loads(state.read_text(encoding="utf-8"))
        if state_record.get("format") != _STATE_FORMAT or state_record.get("step") != step:
            problem = f"not the state file of step {step}"
    if problem is not None:
        problems.append(f"{state}: {problem}")
    for task_type in TaskType:
        path = step_parquet_path(root, task_type, step)
        problem = parquet_problem(path, SCHEMAS[task_type])
        if problem is not None:
            problems.append(f"{path}: {problem}")
    return problems


def discard_steps_after(root: PathLike, step: int) -> None:
    """Roll the log back to `step` (e.g. to resume from an older model checkpoint).

    State files go first, newest first, so a kill midway leaves only uncommitted leftovers.
    """
    root = Path(root)
    for later in reversed([s for s in committed_steps(root) if s > step]):
        step_state_path(root, later).unlink()
    for task_type in TaskType:
        type_dir = root / str(task_type)
        if type_dir.is_dir():
            for path in type_dir.iterdir():
                if _is_step_file(path, "parquet") and _step_of(path) > step:
                    path.unlink()


def _is_step_file(path: Path, extension: str) -> bool:
    match = _STEP_FILE.match(path.name)
    return match is not None and match.group(2) == extension


def _step_of(path: Path) -> int:
    match = _STEP_FILE.match(path.name)
    assert match is not None
    return int(match.group(1))


def _read_step_entries(root: Path, step: int) -> dict[TaskType, list[BufferEntry]]:
    entries: dict[TaskType, list[BufferEntry]] = {}
    for task_type in TaskType:
        path = step_parquet_path(root, task_type, step)
        if not path.is_file():
            raise BufferStoreError(
                f"{path}: missing, but step {step} is committed; the buffer log is damaged"
            )
        problem = parquet_problem(path, SCHEMAS[task_type])
        if problem is not None:
            raise BufferStoreError(f"{path}: {problem}; the buffer log is damaged")
        table = pq.read_table(path)
        if not table.schema.equals(SCHEMAS[task_type]):
            raise BufferStoreError(
                f"{path}: unexpected schema {table.schema}; expected {SCHEMAS[task_type]}"
            )
        rows = entries_from_table(task_type, table)
        if any(entry.step != step for entry in rows):
            raise BufferStoreError(f"{path}: holds rows of another step than {step}")
        entries[task_type] = rows
    return entries


def _read_state(root: Path, step: int) -> dict[str, Any]:
    path = step_state_path(root, step)
    problem = json_problem(path)
    if problem is not None:
        raise BufferStoreError(f"{path}: {problem}; the buffer log is damaged")
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("format") != _STATE_FORMAT or state.get("step") != step:
        raise BufferStoreError(
            f"{path}: not a buffer state file of step {step} (format {state.get('format')!r})"
        )
    return state
