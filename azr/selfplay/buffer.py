"""The task buffers and the data selection of self-play (docs/algorithm.md §8.1, §8.4-§8.8).

One `TaskBuffer` per task type holds every valid proposal in insertion order (no dedup, docs/algorithm.md §8.6)
with per-step addition counters. `Buffers` groups the three with the single random Generator
that drives every sampling decision, so one seed reproduces a run.

On disk the buffers are an append-only log: one Parquet file per task type and step plus a
state file (RNG state) written last. A step counts as committed once its state file exists, so a
kill between files leaves at most an uncommitted step that loading ignores.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from azr.pipeline.atomic_io import PathLike, atomic_write_json, json_problem, parquet_problem, write_parquet_atomic
from azr.config.schema import BufferConfig
from azr.selfplay.task_records import BufferEntry, InductionTask, Triplet
from azr.pipeline.schemas import INDUCTION_SCHEMA, TRIPLET_SCHEMA
from azr.selfplay.seed_tasks import (
    load_induction_seeds,
    load_io_seeds,
    zero_induction_task,
    zero_triplet,
)
from azr.selfplay.task_types import TaskType

ENTRY_CLASS: dict[TaskType, type[Triplet] | type[InductionTask]] = {
    TaskType.DEDUCTION: Triplet,
    TaskType.ABDUCTION: Triplet,
    TaskType.INDUCTION: InductionTask,
}
SCHEMAS: dict[TaskType, pa.Schema] = {
    TaskType.DEDUCTION: TRIPLET_SCHEMA,
    TaskType.ABDUCTION: TRIPLET_SCHEMA,
    TaskType.INDUCTION: INDUCTION_SCHEMA,
}
STATE_DIR = "state"
_STEP_FILE = re.compile(r"^step_(\d{6,})\.(json|parquet)$")
_STATE_FORMAT = 1


class BufferStoreError(RuntimeError):
    """The on-disk buffer log is inconsistent or a step would be written twice."""


class TaskBuffer:
    """Entries of one task type in insertion order, with how many were added at each step.

    The counters include entries the cap dropped: the original counts them as "recent" (docs/algorithm.md §8.6),
    which is what makes `max_new` fall back to old entries once a `keep_oldest` buffer is full.
    """

    def __init__(self, entry_class: type[BufferEntry], max_size: int, cap_policy: str) -> None:
        if cap_policy not in ("keep_oldest", "fifo"):
            raise ValueError(f"cap_policy must be 'keep_oldest' or 'fifo', got {cap_policy!r}")
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {max_size}")
        self.entry_class = entry_class
        self.max_size = max_size
        self.cap_policy = cap_policy
        self.added_per_step: dict[int, int] = {}
        self.version = 0
        """Bumped on every append, so derived views (distinct references) know to refresh."""
        self._entries: list[BufferEntry] = []

    def append(self, entries: Iterable[BufferEntry], step: int) -> list[BufferEntry]:
        """Stamp `entries` with `step`, count them all, then apply the cap.

        Returns the stamped entries (all of them, kept or dropped), as they are persisted.
        """
        stamped = [self._stamp(entry, step) for entry in entries]
        self.added_per_step[step] = self.added_per_step.get(step, 0) + len(stamped)
        self._entries.extend(stamped)
        self.version += 1
        overflow = len(self._entries) - self.max_size
        if overflow > 0:
            if self.cap_policy == "keep_oldest":
                del self._entries[self.max_size :]
            else:
                del self._entries[:overflow]
        return stamped

    def _stamp(self, entry: BufferEntry, step: int) -> BufferEntry:
        if not isinstance(entry, self.entry_class):
            raise TypeError(
                f"this buffer holds {self.entry_class.__name__} entries, got "
                f"{type(entry).__name__}"
            )
        return dataclasses.replace(entry, step=step)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> tuple[BufferEntry, ...]:
        return tuple(self._entries)

    def recent_count(self, step: int, window: int) -> int:
        """Additions at steps s < `step` with `step` - s <= `window`: at the start of step t,
        step t has added nothing yet, and at t = 1 the step-0 seeds are the recent ones."""
        return sum(n for s, n in self.added_per_step.items() if s < step and step - s <= window)


class Buffers:
    """The three task buffers, their config, and the one Generator used for all sampling."""

    def __init__(self, config: BufferConfig, rng: np.random.Generator) -> None:
        """Empty buffers; use `initial` to seed them or `load` to resume a run."""
        self.config = config
        self.rng = rng
        self.buffers: dict[TaskType, TaskBuffer] = {
            task_type: TaskBuffer(ENTRY_CLASS[task_type], config.max_size, config.cap_policy)
            for task_type in TaskType
        }
        self.step = -1
        """The newest step whose entries have been added (-1: none yet)."""
        self._initial: dict[TaskType, list[BufferEntry]] = {}
        self._distinct_cache: dict[TaskType, tuple[int, list[Triplet]]] = {}

    @classmethod
    def initial(cls, config: BufferConfig, seed: int) -> Buffers:
        """Buffers at step 0: the seed files when configured, the zero tasks otherwise (docs/algorithm.md §8.4).

        The same I/O seeds go into both the abduction and the deduction buffer (docs/algorithm.md §8.4).
        """
        io_seeds: list[BufferEntry] = (
            list(load_io_seeds(config.seed_io_file, config.seed_limit))
            if config.seed_io_file is not None
            else [zero_triplet()]
        )
        induction_seeds: list[BufferEntry] = (
            list(load_induction_seeds(config.seed_induction_file, config.seed_limit))
            if config.seed_induction_file is not None
            else [zero_induction_task()]
        )
        buffers = cls(config, np.random.default_rng(seed))
        seeds = {
            TaskType.DEDUCTION: io_seeds,
            TaskType.ABDUCTION: list(io_seeds),
            TaskType.INDUCTION: induction_seeds,
        }
        buffers._initial = buffers.add_step(0, seeds)
        return buffers

    def __getitem__(self, task_type: TaskType) -> TaskBuffer:
        return self.buffers[task_type]

    # ----------------------------------------------------------------------------- sampling

    def sample_references(self, task_type: TaskType, k: int) -> list[Triplet]:
        """K = min(k, candidates) distinct references for a propose prompt (docs/algorithm.md §8.5).

        Candidates are the buffer's entries (`reference_sampling: entries`, the original: a
        program stored twice is drawn more often), or its distinct contents (program, input,
        output), each represented by its newest occurrence; drawn uniformly or weighted by
        step + 1.
        """
        if task_type == TaskType.INDUCTION:
            raise ValueError(
                "induction proposers take one program via sample_induction_program(), not "
                "references"
            )
        if k < 0:
            raise ValueError(f"k must be non-negative, got {k}")
        if self.config.reference_sampling == "entries":
            candidates = list(self.buffers[task_type].entries)
        else:
            candidates = self._distinct_triplets(task_type)
        count = min(k, len(candidates))
        if count == 0:
            return []
        weights = None
        if self.config.reference_weighting == "step":
            steps = np.array([entry.step + 1 for entry in candidates], dtype=np.float64)
            weights = steps / steps.sum()
        picked = self.rng.choice(len(candidates), size=count, replace=False, p=weights)
        return [candidates[i] for i in picked]

    def sample_induction_program(self) -> Triplet:
        """One entry uniformly from abduction + deduction entries, duplicates counted (docs/algorithm.md §8.5)."""
        abduction = self.buffers[TaskType.ABDUCTION].entries
        deduction = self.buffers[TaskType.DEDUCTION].entries
        total = len(abduction) + len(deduction)
        if total == 0:
            raise ValueError("no deduction/abduction entries to take an induction program from")
        index = int(self.rng.integers(total))
        entry = abduction[index] if index < len(abduction) else deduction[index - len(abduction)]
        assert isinstance(entry, Triplet)
        return entry

    def select_solve_batch(
        self, task_type: TaskType, step: int, batch_size: int
    ) -> list[BufferEntry]:
        """Exactly `batch_size` tasks to solve at the start of `step` (docs/algorithm.md §8.7, §2.5).

        New tasks (those added within the recent window, i.e. step - 1's proposals) come first,
        then a uniform draw from the whole buffer (it may repeat new ones), then duplicates of
        already chosen tasks if the buffer is smaller than the batch.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        buffer = self.buffers[task_type]
        entries = buffer.entries
        if not entries:
            raise ValueError(f"the {task_type} buffer is empty; seed it before selecting tasks")
        selected = self._sample_new(buffer, entries, step, batch_size)
        selected += self._sample_without_replacement(entries, batch_size - len(selected))
        return selected + self._duplicates(selected, batch_size - len(selected))

    def _sample_new(
        self, buffer: TaskBuffer, entries: Sequence[BufferEntry], step: int, batch_size: int
    ) -> list[BufferEntry]:
        max_new = {
            "max_new": batch_size,
            "half_new": batch_size // 2,
            "uniform_total": 0,
        }[self.config.solve_selection]
        recent = min(buffer.recent_count(step, self.config.recent_window), len(entries))
        new = entries[len(entries) - recent :] if recent else ()
        return self._sample_without_replacement(new, min(len(new), max_new))

    def _sample_without_replacement(
        self, entries: Sequence[BufferEntry], count: int
    ) -> list[BufferEntry]:
        count = min(count, len(entries))
        if count <= 0:
            return []
        return [entries[i] for i in self.rng.choice(len(entries), size=count, replace=False)]

    def _duplicates(self, selected: list[BufferEntry], count: int) -> list[BufferEntry]:
        if count <= 0:
            return []
        return [selected[i] for i in self.rng.integers(len(selected), size=count)]

    def _distinct_triplets(self, task_type: TaskType) -> list[Triplet]:
        """Distinct contents in first-seen order, each as its newest entry; cached per append."""
        buffer = self.buffers[task_type]
        cached = self._distinct_cache.get(task_type)
        if cached is not None and cached[0] == buffer.version:
            return cached[1]
        newest: dict[tuple[str, str, str], Triplet] = {}
        for entry in buffer.entries:
            assert isinstance(entry, Triplet)
            newest[(entry.program, entry.input, entry.output)] = entry
        distinct = list(newest.values())
        self._distinct_cache[task_type] = (buffer.version, distinct)
        return distinct

    # -------------------------------------------------------------------------- persistence

    def commit(
        self,
        directory: PathLike,
        step: int,
        new_entries_by_type: dict[TaskType, list[BufferEntry]],
    ) -> None:
        """Add step `step`'s valid proposals and append them to the on-disk log.

        Every task type gets a Parquet file (empty if it added nothing) holding all entries
        passed, including those the cap drops, so replay reproduces the counters. The state
        file (RNG state) is written last: it marks the step as committed.
        """
        root = Path(directory)
        self._check_uncommitted(root, step)
        added = self.add_step(step, new_entries_by_type)
        self._write_step(root, step, added)

    def write_initial(self, directory: PathLike) -> None:
        """Persist step 0 (the seeds) so a run can be replayed from its very start."""
        if self.step != 0 or not self._initial:
            raise BufferStoreError(
                "write_initial() needs buffers fresh from Buffers.initial(), before any later "
                f"step (newest step here: {self.step})"
            )
        root = Path(directory)
        self._check_uncommitted(root, 0)
        self._write_step(root, 0, self._initial)

    @classmethod
    def load(
        cls, directory: PathLike, config: BufferConfig, up_to_step: int | None = None
    ) -> Buffers:
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
        buffers = cls(config, np.random.default_rng())
        for step in steps:
            buffers.add_step(step, _read_step_entries(root, step))
        state = _read_state(root, steps[-1])
        buffers._check_sizes(root, state)
        buffers.rng.bit_generator.state = state["rng_state"]
        return buffers

    def add_step(
        self, step: int, entries_by_type: dict[TaskType, list[BufferEntry]]
    ) -> dict[TaskType, list[BufferEntry]]:
        """Add one step's entries to every buffer, in memory only (`commit` also persists).

        Steps only move forward, and types are checked first, so a bad call leaves all three
        buffers untouched.
        """
        if step <= self.step:
            raise BufferStoreError(
                f"step {step} is not after the newest step in memory ({self.step}); steps are "
                "added once each, in increasing order"
            )
        unknown = set(entries_by_type) - set(TaskType)
        if unknown:
            raise ValueError(f"unknown task types {sorted(map(str, unknown))}")
        entries_by_type = {t: list(entries) for t, entries in entries_by_type.items()}
        for task_type, entries in entries_by_type.items():
            _check_entry_types(task_type, entries)
        added = {
            task_type: self.buffers[task_type].append(entries_by_type.get(task_type, []), step)
            for task_type in TaskType
        }
        self.step = step
        return added

    def _write_step(
        self, root: Path, step: int, entries_by_type: dict[TaskType, list[BufferEntry]]
    ) -> None:
        for task_type in TaskType:
            table = entries_to_table(task_type, entries_by_type.get(task_type, []))
            write_parquet_atomic(table, step_parquet_path(root, task_type, step))
        state = {
            "format": _STATE_FORMAT,
            "step": step,
            "rng_state": self.rng.bit_generator.state,
            "sizes": {str(t): len(self.buffers[t]) for t in TaskType},
        }
        atomic_write_json(step_state_path(root, step), state)

    def _check_sizes(self, root: Path, state: dict[str, Any]) -> None:
        """Replay must rebuild the buffers the run had; a mismatch means a changed cap or a
        damaged log, and sampling would silently diverge."""
        actual = {str(t): len(self.buffers[t]) for t in TaskType}
        if state.get("sizes", actual) != actual:
            raise BufferStoreError(
                f"{root}: replaying up to step {state['step']} gives buffer sizes {actual}, but "
                f"the run had {state['sizes']}; load with the run's buffer config (max_size, "
                "cap_policy)"
            )

    @staticmethod
    def _check_uncommitted(root: Path, step: int) -> None:
        if step_state_path(root, step).exists():
            raise BufferStoreError(
                f"{root}: step {step} is already committed; refusing to write its rows twice. "
                "Use a new directory, or discard_steps_after() to roll the log back first"
            )


def _check_entry_types(task_type: TaskType, entries: Iterable[BufferEntry]) -> None:
    expected = ENTRY_CLASS[task_type]
    for entry in entries:
        if not isinstance(entry, expected):
            raise TypeError(
                f"{task_type} entries must be {expected.__name__}, got {type(entry).__name__}"
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
