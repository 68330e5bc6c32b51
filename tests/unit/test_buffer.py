"""Task buffers, data selection and the append-only buffer log (docs/algorithm.md §8)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from azr.pipeline.atomic_io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    write_parquet_atomic,
)
from azr.selfplay.buffer import Buffers, BufferStoreError, TaskBuffer
from azr.pipeline.buffer_log import (
    commit_step,
    committed_steps,
    discard_steps_after,
    entries_from_table,
    entries_to_table,
    load_buffer_log,
    step_parquet_path,
    step_state_path,
    write_initial,
)
from azr.config.schema import BufferConfig
from azr.selfplay.task_records import BufferEntry, InductionTask, Triplet
from azr.pipeline.schemas import TRIPLET_SCHEMA
from azr.selfplay.seed_tasks import zero_induction_task, zero_triplet
from azr.selfplay.task_types import TaskType

D, A, IND = TaskType.DEDUCTION, TaskType.ABDUCTION, TaskType.INDUCTION


def triplet(tag: str | int, step: int = 0) -> Triplet:
    return Triplet(f"def f(a):\n    return a + {tag!r}", repr(tag), repr(tag), (), step)


def induction(tag: str | int) -> InductionTask:
    return InductionTask(f"def f(a):\n    return {tag!r}", ("1", "2"), (repr(tag),) * 2, "const")


def make_buffers(seeds: list[Triplet], seed: int = 0, **config: Any) -> Buffers:
    """Buffers whose deduction/abduction seeds are `seeds`, added at step 0."""
    buffers = Buffers(BufferConfig(**config), np.random.default_rng(seed))
    buffers.add_step(0, {D: seeds, A: seeds, IND: [zero_induction_task()]})
    return buffers


# ------------------------------------------------------------------------------- TaskBuffer


def test_append_stamps_the_step() -> None:
    buffer = TaskBuffer(Triplet, max_size=10, cap_policy="keep_oldest")
    stamped = buffer.append([triplet(1, step=99), triplet(2)], step=4)
    assert [e.step for e in buffer.entries] == [4, 4]
    assert stamped == list(buffer.entries)
    assert buffer.added_per_step == {4: 2}
    assert len(buffer) == 2


def test_keep_oldest_drops_new_entries_but_counts_them() -> None:
    buffer = TaskBuffer(Triplet, max_size=5, cap_policy="keep_oldest")
    buffer.append([triplet(i) for i in range(4)], step=0)
    buffer.append([triplet(10 + i) for i in range(3)], step=1)
    buffer.append([triplet(20 + i) for i in range(2)], step=2)
    assert [e.input for e in buffer.entries] == ["0", "1", "2", "3", "10"]
    assert buffer.added_per_step == {0: 4, 1: 3, 2: 2}
    assert buffer.recent_count(step=3, window=1) == 2


def test_fifo_evicts_the_oldest() -> None:
    buffer = TaskBuffer(Triplet, max_size=5, cap_policy="fifo")
    buffer.append([triplet(i) for i in range(4)], step=0)
    buffer.append([triplet(10 + i) for i in range(3)], step=1)
    assert [e.input for e in buffer.entries] == ["2", "3", "10", "11", "12"]
    buffer.append([triplet(20 + i) for i in range(6)], step=2)
    assert [e.input for e in buffer.entries] == ["21", "22", "23", "24", "25"]
    assert buffer.added_per_step == {0: 4, 1: 3, 2: 6}


def test_recent_count_window() -> None:
    buffer = TaskBuffer(Triplet, max_size=100, cap_policy="keep_oldest")
    for step, count in [(0, 5), (1, 2), (2, 3)]:
        buffer.append([triplet(f"{step}-{i}") for i in range(count)], step)
    assert buffer.recent_count(step=1, window=1) == 5  # at t = 1 the seeds are recent
    assert buffer.recent_count(step=3, window=1) == 3
    assert buffer.recent_count(step=3, window=2) == 5
    assert buffer.recent_count(step=2, window=1) == 2  # step 2's own additions never count
    assert buffer.recent_count(step=5, window=1) == 0


def test_append_rejects_the_wrong_record_type() -> None:
    buffer = TaskBuffer(Triplet, max_size=10, cap_policy="fifo")
    with pytest.raises(TypeError, match="Triplet"):
        buffer.append([zero_induction_task()], step=0)
    assert len(buffer) == 0 and buffer.added_per_step == {}


def test_add_step_is_all_or_nothing() -> None:
    buffers = make_buffers([triplet(0)])
    with pytest.raises(TypeError):
        buffers.add_step(1, {D: [triplet(1)], IND: [triplet(2)]})
    assert len(buffers[D]) == 1 and buffers.step == 0
    with pytest.raises(BufferStoreError, match="increasing"):
        buffers.add_step(0, {})


# ---------------------------------------------------------------------------- initialisation


def test_initial_from_zero_data() -> None:
    buffers = Buffers.initial(BufferConfig(), seed=0)
    assert buffers[D].entries == (zero_triplet(),)
    assert buffers[A].entries == (zero_triplet(),)
    assert buffers[IND].entries == (zero_induction_task(),)
    assert all(buffers[t].added_per_step == {0: 1} for t in TaskType)
    assert buffers.step == 0


def test_initial_from_seed_files(tmp_path: Path) -> None:
    io_path = tmp_path / "seed_io.jsonl"
    io_path.write_text(
        "".join(
            json.dumps({"snippet": f"def f(a):\n    return a + {i}", "input": "1",
                        "output": str(1 + i), "imports": [], "original_snippet": "",
                        "composite_functions": []}) + "\n"
            for i in range(6)
        )
    )
    f_path = tmp_path / "code_f.jsonl"
    f_path.write_text(
        json.dumps({"snippet": "def f(a):\n    return a", "inputs": ["1", "2"],
                    "outputs": ["1", "2"], "message": "same", "imports": []}) + "\n"
    )
    config = BufferConfig(seed_io_file=io_path, seed_induction_file=f_path, seed_limit=4)
    buffers = Buffers.initial(config, seed=0)
    assert len(buffers[D]) == len(buffers[A]) == 4
    assert buffers[D].entries == buffers[A].entries
    assert [e.output for e in buffers[D].entries] == ["1", "2", "3", "4"]
    assert [e.message for e in buffers[IND].entries] == ["same"]
    assert all(e.step == 0 for t in TaskType for e in buffers[t].entries)


# ------------------------------------------------------------------------------- references


def test_references_are_distinct_and_at_most_the_buffer() -> None:
    buffers = make_buffers([triplet(i) for i in range(10)])
    for k in (0, 1, 6, 10, 50):
        refs = buffers.sample_references(D, k)
        assert len(refs) == min(k, 10)
        assert len(set(refs)) == len(refs)
        assert set(refs) <= set(buffers[D].entries)


def test_references_stay_distinct_with_duplicated_entries() -> None:
    seeds = [triplet(i % 3) for i in range(15)]  # 3 distinct contents, 5 copies each
    buffers = make_buffers(seeds, reference_sampling="distinct")
    buffers.add_step(1, {D: [triplet(0), triplet(1)]})  # same content, newer step
    for _ in range(20):
        refs = buffers.sample_references(D, 6)
        assert len(refs) == 3
        assert len({(r.program, r.input, r.output) for r in refs}) == 3


def test_references_are_drawn_over_entries_by_default() -> None:
    # The original samples entries: a program stored 9 times is drawn 9 times as often.
    seeds = [triplet("common")] * 9 + [triplet("rare")]
    buffers = make_buffers(seeds)
    assert buffers.config.reference_sampling == "entries"
    assert len(buffers.sample_references(D, 6)) == 6  # distinct entries, repeated contents
    picks = Counter(buffers.sample_references(D, 1)[0].input for _ in range(400))
    assert picks["'common'"] > 300
    distinct = make_buffers(seeds, reference_sampling="distinct")
    picks = Counter(distinct.sample_references(D, 1)[0].input for _ in range(400))
    assert 120 < picks["'common'"] < 280


def test_references_weighted_by_step() -> None:
    buffers = make_buffers([triplet(i) for i in range(5)], reference_weighting="step")
    buffers.add_step(60, {A: [triplet("new")]})
    picks = Counter(buffers.sample_references(A, 1)[0].input for _ in range(400))
    assert picks["'new'"] > 300  # weight 61 against 5 x 1
    uniform = make_buffers([triplet(i) for i in range(5)])
    uniform.add_step(60, {A: [triplet("new")]})
    picks = Counter(uniform.sample_references(A, 1)[0].input for _ in range(400))
    assert picks["'new'"] < 120


def test_references_for_induction_are_refused() -> None:
    with pytest.raises(ValueError, match="sample_induction_program"):
        make_buffers([triplet(0)]).sample_references(IND, 2)


def test_induction_program_counts_duplicates_across_both_buffers() -> None:
    buffers = Buffers(BufferConfig(), np.random.default_rng(1))
    buffers.add_step(0, {A: [triplet("a")], D: [triplet("d")] * 3})
    picks = Counter(buffers.sample_induction_program().input for _ in range(2000))
    assert set(picks) == {"'a'", "'d'"}
    assert 0.2 < picks["'a'"] / 2000 < 0.3  # 1 of 4 entries


# ------------------------------------------------------------------------------ solve batches


def test_solve_batch_puts_previous_step_tasks_first() -> None:
    seeds = [triplet(i) for i in range(10)]
    buffers = make_buffers(seeds)
    new = [triplet(f"new{i}") for i in range(3)]
    buffers.add_step(1, {D: new})
    batch = buffers.select_solve_batch(D, step=2, batch_size=8)
    assert len(batch) == 8
    assert {e.input for e in batch[:3]} == {e.input for e in new}
    assert all(e.step == 1 for e in batch[:3])
    assert set(batch[3:]) <= set(buffers[D].entries)
    assert len(set(batch[3:])) == 5  # drawn without replacement from the whole buffer


def test_solve_batch_at_step_one_uses_the_seeds() -> None:
    buffers = make_buffers([triplet(i) for i in range(10)])
    batch = buffers.select_solve_batch(D, step=1, batch_size=8)
    assert len(set(batch)) == 8 and set(batch) <= set(buffers[D].entries)


def test_half_new_takes_at_most_half_new() -> None:
    buffers = make_buffers([triplet(i) for i in range(10)], solve_selection="half_new")
    new = [triplet(f"new{i}") for i in range(6)]
    buffers.add_step(1, {D: new})
    batch = buffers.select_solve_batch(D, step=2, batch_size=8)
    assert len(batch) == 8
    assert all(e.step == 1 for e in batch[:4]) and len(set(batch[:4])) == 4
    assert len(set(batch[4:])) == 4


def test_uniform_total_ignores_recency() -> None:
    buffers = make_buffers([triplet(i) for i in range(20)], solve_selection="uniform_total")
    buffers.add_step(1, {D: [triplet("new")]})
    batch = buffers.select_solve_batch(D, step=2, batch_size=21)
    assert len(batch) == 21 and len(set(batch)) == 21


def test_full_keep_oldest_buffer_returns_old_entries_as_new() -> None:
    seeds = [triplet(i) for i in range(10)]
    buffers = make_buffers(seeds, max_size=10)
    buffers.add_step(1, {D: [triplet("dropped")] * 3})
    assert len(buffers[D]) == 10
    batch = buffers.select_solve_batch(D, step=2, batch_size=8)
    # The original's quirk (docs/algorithm.md §8.6): dropped proposals still count as recent, so the
    # "new" slice is the last 3 old entries.
    assert {e.input for e in batch[:3]} == {"7", "8", "9"}


def test_padding_when_the_buffer_is_smaller_than_the_batch() -> None:
    buffers = make_buffers([zero_triplet()])
    assert buffers.select_solve_batch(D, step=1, batch_size=5) == [zero_triplet()] * 5

    small = make_buffers([triplet(i) for i in range(3)])
    batch = small.select_solve_batch(D, step=1, batch_size=8)
    assert len(batch) == 8
    assert len(set(batch[:3])) == 3 and len(set(batch[3:6])) == 3
    assert set(batch) == set(small[D].entries)


def test_solve_batch_errors() -> None:
    buffers = Buffers(BufferConfig(), np.random.default_rng(0))
    with pytest.raises(ValueError, match="empty"):
        buffers.select_solve_batch(D, step=1, batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        make_buffers([triplet(0)]).select_solve_batch(D, step=1, batch_size=0)


def test_same_seed_same_samples() -> None:
    def samples(seed: int) -> list[Any]:
        buffers = make_buffers([triplet(i) for i in range(30)], seed=seed)
        buffers.add_step(1, {D: [triplet(f"n{i}") for i in range(5)]})
        return [
            buffers.select_solve_batch(D, step=2, batch_size=16),
            buffers.sample_references(A, 6),
            buffers.sample_induction_program(),
        ]

    assert samples(7) == samples(7)
    assert samples(7) != samples(8)


# ------------------------------------------------------------------------------ persistence


def proposals(step: int) -> dict[TaskType, list[BufferEntry]]:
    """Deterministic 'valid proposals' of a step, varying in number per type."""
    return {
        D: [triplet(f"d{step}-{i}") for i in range(step % 3 + 1)],
        A: [triplet(f"a{step}-{i}") for i in range(2)],
        IND: [induction(f"i{step}-{i}") for i in range(step % 2)],
    }


def one_step(buffers: Buffers, step: int) -> list[Any]:
    """Everything a training step samples, in the order the pipeline samples it."""
    drawn: list[Any] = []
    for task_type in (A, D):
        drawn.append(buffers.sample_references(task_type, 3))
    drawn.append([buffers.sample_induction_program() for _ in range(3)])
    for task_type in (A, D, IND):
        drawn.append(buffers.select_solve_batch(task_type, step, 6))
    return drawn


def run(directory: Path, first: int, last: int, buffers: Buffers | None = None) -> list[Any]:
    if buffers is None:
        buffers = Buffers.initial(BufferConfig(max_size=12, cap_policy="fifo"), seed=3)
        write_initial(buffers, directory)
    drawn = []
    for step in range(first, last + 1):
        drawn.append(one_step(buffers, step))
        commit_step(buffers, directory, step, proposals(step))
    return drawn


def test_load_continues_exactly_like_an_uninterrupted_run(tmp_path: Path) -> None:
    config = BufferConfig(max_size=12, cap_policy="fifo")
    full = run(tmp_path / "full", 1, 8)
    run(tmp_path / "killed", 1, 4)
    resumed = load_buffer_log(tmp_path / "killed", config)
    assert resumed.step == 4
    assert run(tmp_path / "killed", 5, 8, buffers=resumed) == full[4:]


def test_load_up_to_step_then_roll_back(tmp_path: Path) -> None:
    config = BufferConfig(max_size=12, cap_policy="fifo")
    full = run(tmp_path, 1, 6)
    buffers = load_buffer_log(tmp_path, config, up_to_step=3)
    assert buffers.step == 3
    with pytest.raises(BufferStoreError, match="already committed"):
        commit_step(buffers, tmp_path, 4, proposals(4))
    discard_steps_after(tmp_path, 3)
    assert committed_steps(tmp_path) == [0, 1, 2, 3]
    assert not step_parquet_path(tmp_path, D, 4).exists()
    assert run(tmp_path, 4, 6, buffers=buffers) == full[3:]


def test_loaded_buffers_equal_the_in_memory_ones(tmp_path: Path) -> None:
    buffers = Buffers.initial(BufferConfig(max_size=5, cap_policy="keep_oldest"), seed=1)
    write_initial(buffers, tmp_path)
    for step in range(1, 5):
        commit_step(buffers, tmp_path, step, proposals(step))
    loaded = load_buffer_log(tmp_path, buffers.config)
    for task_type in TaskType:
        assert loaded[task_type].entries == buffers[task_type].entries
        assert loaded[task_type].added_per_step == buffers[task_type].added_per_step
    assert loaded.rng.bit_generator.state == buffers.rng.bit_generator.state


def test_step_files_hold_every_entry_passed(tmp_path: Path) -> None:
    buffers = make_buffers([triplet(i) for i in range(5)], max_size=5)
    commit_step(buffers, tmp_path, 1, {D: [triplet("x"), triplet("y")]})
    assert len(buffers[D]) == 5  # the cap dropped both
    table = pq.read_table(step_parquet_path(tmp_path, D, 1))
    assert table.column("input").to_pylist() == ["'x'", "'y'"]
    assert table.column("step").to_pylist() == [1, 1]
    assert pq.read_table(step_parquet_path(tmp_path, IND, 1)).num_rows == 0
    state = json.loads(step_state_path(tmp_path, 1).read_text())
    assert state["step"] == 1 and state["rng_state"] == buffers.rng.bit_generator.state


def test_uncommitted_step_is_ignored(tmp_path: Path) -> None:
    config = BufferConfig(max_size=12, cap_policy="fifo")
    run(tmp_path, 1, 2)
    reference = load_buffer_log(tmp_path, config)
    # A kill during step 3: some Parquet files written, no state file.
    write_parquet_atomic(entries_to_table(D, proposals(3)[D]), step_parquet_path(tmp_path, D, 3))
    write_parquet_atomic(entries_to_table(A, proposals(3)[A]), step_parquet_path(tmp_path, A, 3))
    (tmp_path / "state" / ".step_000003.json.123.abcd.tmp").write_text("{")
    loaded = load_buffer_log(tmp_path, config)
    assert loaded.step == 2
    for task_type in TaskType:
        assert loaded[task_type].entries == reference[task_type].entries
    assert one_step(loaded, 3) == one_step(reference, 3)
    commit_step(loaded, tmp_path, 3, proposals(3))  # the retried step replaces the leftovers
    assert load_buffer_log(tmp_path, config).step == 3


def test_recommitting_a_step_raises(tmp_path: Path) -> None:
    buffers = Buffers.initial(BufferConfig(), seed=0)
    write_initial(buffers, tmp_path)
    commit_step(buffers, tmp_path, 1, proposals(1))
    with pytest.raises(BufferStoreError):
        commit_step(buffers, tmp_path, 1, proposals(1))
    with pytest.raises(BufferStoreError):
        write_initial(Buffers.initial(BufferConfig(), seed=0), tmp_path)
    stale = load_buffer_log(tmp_path, BufferConfig(), up_to_step=0)
    with pytest.raises(BufferStoreError, match="already committed"):
        commit_step(stale, tmp_path, 1, proposals(1))
    assert pq.read_table(step_parquet_path(tmp_path, D, 1)).num_rows == len(proposals(1)[D])


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(BufferStoreError, match="no committed"):
        load_buffer_log(tmp_path, BufferConfig())
    buffers = Buffers.initial(BufferConfig(max_size=12, cap_policy="fifo"), seed=0)
    write_initial(buffers, tmp_path)
    commit_step(buffers, tmp_path, 1, {D: [triplet(i) for i in range(12)]})
    with pytest.raises(BufferStoreError, match="max_size"):
        load_buffer_log(tmp_path, BufferConfig(max_size=5))
    step_parquet_path(tmp_path, A, 1).unlink()
    with pytest.raises(BufferStoreError, match="damaged"):
        load_buffer_log(tmp_path, BufferConfig(max_size=12, cap_policy="fifo"))


def test_write_initial_only_on_fresh_buffers(tmp_path: Path) -> None:
    buffers = make_buffers([triplet(0)])
    with pytest.raises(BufferStoreError, match="initial"):
        write_initial(buffers, tmp_path)


def test_table_round_trip() -> None:
    entries = [triplet(1, step=2), Triplet("p", "i", "o", ("import math",), 3)]
    table = entries_to_table(D, entries)
    assert table.schema.equals(TRIPLET_SCHEMA)
    assert entries_from_table(D, table) == entries
    tasks = [induction("x")]
    assert entries_from_table(IND, entries_to_table(IND, tasks)) == tasks


# -------------------------------------------------------------------------------- artifacts


def test_atomic_writers(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "a" / "b.bin", b"\x00\x01")
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01"
    atomic_write_text(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    atomic_write_json(tmp_path / "j.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "j.json").read_text()) == {"x": [1, 2]}
    table = pa.table({"x": [1, 2, 3]})
    write_parquet_atomic(table, tmp_path / "t.parquet")
    assert pq.read_table(tmp_path / "t.parquet").equals(table)
    assert not list(tmp_path.rglob("*.tmp"))


def test_failed_write_keeps_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    atomic_write_json(path, {"ok": True})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": True}

    table_path = tmp_path / "t.parquet"
    write_parquet_atomic(pa.table({"x": [1]}), table_path)

    def torn_write(table: pa.Table, handle: Any, **options: Any) -> None:
        handle.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr("azr.pipeline.atomic_io.pq.write_table", torn_write)
    with pytest.raises(OSError, match="disk full"):
        write_parquet_atomic(pa.table({"x": [2]}), table_path)
    monkeypatch.undo()
    assert pq.read_table(table_path).column("x").to_pylist() == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "t.parquet"]


def test_references_see_entries_added_after_a_sample() -> None:
    buffers = make_buffers([triplet(i) for i in range(3)])
    assert len(buffers.sample_references(D, 10)) == 3
    buffers[D].append([triplet("late")], step=1)
    assert triplet("late", step=1) in buffers.sample_references(D, 10)


def test_the_buffers_do_no_io() -> None:
    """Sampling lives in azr/selfplay/buffer.py; the on-disk log in azr/pipeline/buffer_log.py."""
    import ast

    import azr.selfplay.buffer as module

    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    io = {"json", "pathlib", "pyarrow", "pyarrow.parquet", "azr.pipeline.atomic_io", "os", "shutil"}
    assert not imported & io and not any(name.startswith("azr.pipeline") for name in imported)
    calls = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert "open" not in calls
