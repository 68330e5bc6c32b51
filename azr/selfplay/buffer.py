"""The task buffers and the data selection of self-play (docs/algorithm.md §8.1, §8.4-§8.8).

One `TaskBuffer` per task type holds every valid proposal in insertion order (no dedup, docs/algorithm.md §8.6)
with per-step addition counters. `Buffers` groups the three with the single random Generator
that drives every sampling decision, so one seed reproduces a run.

No I/O here: a run keeps its buffers as an append-only log on disk, written and replayed by
azr/pipeline/buffer_log.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np

from azr.config.schema import BufferConfig
from azr.selfplay.seed_tasks import (
    load_induction_seeds,
    load_io_seeds,
    zero_induction_task,
    zero_triplet,
)
from azr.selfplay.task_records import BufferEntry, InductionTask, Triplet
from azr.selfplay.task_types import TaskType

ENTRY_CLASS: dict[TaskType, type[Triplet] | type[InductionTask]] = {
    TaskType.DEDUCTION: Triplet,
    TaskType.ABDUCTION: Triplet,
    TaskType.INDUCTION: InductionTask,
}


class BufferStoreError(RuntimeError):
    """A step added out of order, or (azr/pipeline/buffer_log.py) a buffer log that is
    inconsistent or would get a step twice."""


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
        """Empty buffers; use `initial` to seed them (buffer_log.load_buffer_log resumes a run's)."""
        self.config = config
        self.rng = rng
        self.buffers: dict[TaskType, TaskBuffer] = {
            task_type: TaskBuffer(ENTRY_CLASS[task_type], config.max_size, config.cap_policy)
            for task_type in TaskType
        }
        self.step = -1
        """The newest step whose entries have been added (-1: none yet)."""
        self.seed_entries: dict[TaskType, list[BufferEntry]] = {}
        """The step-0 entries of `initial` (what the log writes as its step 0)."""
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
        buffers.seed_entries = buffers.add_step(0, seeds)
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

    # ------------------------------------------------------------------------ adding a step

    def add_step(
        self, step: int, entries_by_type: dict[TaskType, list[BufferEntry]]
    ) -> dict[TaskType, list[BufferEntry]]:
        """Add one step's entries to every buffer (buffer_log.commit_step also appends them to the log).

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


def _check_entry_types(task_type: TaskType, entries: Iterable[BufferEntry]) -> None:
    expected = ENTRY_CLASS[task_type]
    for entry in entries:
        if not isinstance(entry, expected):
            raise TypeError(
                f"{task_type} entries must be {expected.__name__}, got {type(entry).__name__}"
            )
