"""Building an iteration's prompts from the buffers: order, lag, length filters, determinism."""

from __future__ import annotations

import pandas as pd
import pytest

from azr.pipeline.atomic_io import write_parquet_atomic
from azr.selfplay.iteration_prompts import PromptBuildError, build_iteration_prompts, prompts_table
from azr.selfplay.buffer import Buffers
from azr.config.schema import AZRConfig
from azr.config.loading import build_config
from azr.selfplay.task_records import Triplet
from azr.pipeline.schemas import PROMPT_SCHEMA
from azr.selfplay.task_types import GROUP_NAMES, TaskType
from azr.selfplay.prompts.chat_format import R1Wrapper


def config(*overrides: str) -> AZRConfig:
    return build_config("tiny", overrides=list(overrides))


def seeded_buffers(cfg: AZRConfig, count: int = 12) -> Buffers:
    buffers = Buffers.initial(cfg.buffer, cfg.seed)
    step0 = [Triplet(f"def f(a):\n    return a + {i}", str(i), str(2 * i)) for i in range(count)]
    buffers.add_step(1, {TaskType.ABDUCTION: step0, TaskType.DEDUCTION: step0, TaskType.INDUCTION: []})
    return buffers


def words(text: str) -> int:
    return len(text.split())


def test_six_groups_in_order_with_batch_size_each() -> None:
    cfg = config("rollout.batch_size=3")
    prompts = build_iteration_prompts(Buffers.initial(cfg.buffer, 0), 1, cfg, R1Wrapper(), words)
    groups = [r.group.name for r in prompts.propose + prompts.solve]
    assert sorted(set(groups)) == sorted(GROUP_NAMES)
    assert all(groups.count(name) == 3 for name in GROUP_NAMES)
    assert [r.group.task_type for r in prompts.propose[::3]] == [TaskType.ABDUCTION, TaskType.DEDUCTION, TaskType.INDUCTION]
    assert all(r.prompt.endswith("Assistant: <think>") for r in prompts.propose + prompts.solve)
    assert all(r.prompt_tokens == words(r.prompt) for r in prompts.propose)


def test_same_seed_same_prompts_and_another_seed_differs() -> None:
    def texts(seed: int) -> list[str]:
        cfg = config("rollout.batch_size=4", f"seed={seed}")
        prompts = build_iteration_prompts(seeded_buffers(cfg), 2, cfg, R1Wrapper())
        return [r.prompt for r in prompts.propose + prompts.solve]

    assert texts(5) == texts(5)
    assert texts(5) != texts(6)


def test_solve_prompts_hold_the_previous_step_tasks_first() -> None:
    cfg = config("rollout.batch_size=4")
    buffers = seeded_buffers(cfg, count=3)
    prompts = build_iteration_prompts(buffers, 2, cfg, R1Wrapper())
    deduction = [r.task for r in prompts.solve if r.group.name == "deduction_solve"]
    assert {t.input for t in deduction[:3]} == {"0", "1", "2"} and all(t.step == 1 for t in deduction[:3])


def test_references_are_distinct_within_a_prompt() -> None:
    cfg = config("rollout.batch_size=2", "tasks.references=4")
    prompts = build_iteration_prompts(seeded_buffers(cfg), 2, cfg, R1Wrapper())
    for record in prompts.propose:
        if record.group.task_type is not TaskType.INDUCTION:
            assert len(record.references) == 4 == len(set(record.references))
            assert "<snippet_3>" in record.prompt


def test_only_configured_task_types() -> None:
    cfg = config("tasks.types=[deduction]")
    prompts = build_iteration_prompts(Buffers.initial(cfg.buffer, 0), 1, cfg, R1Wrapper())
    assert {r.group.name for r in prompts.propose + prompts.solve} == {"deduction_propose", "deduction_solve"}


def test_over_long_propose_prompts_are_resampled() -> None:
    cfg = config("rollout.batch_size=3", "tasks.references=1", "tasks.types=[abduction]")
    buffers = Buffers.initial(cfg.buffer, 0)
    long_program = "def f(a):\n    return a" + " + 0" * 2000
    buffers.add_step(1, {TaskType.ABDUCTION: [Triplet(long_program, "1", "1")], TaskType.DEDUCTION: [], TaskType.INDUCTION: []})
    cfg.rollout.content_max_tokens = 1500  # the zero triplet fits, the long program does not
    prompts = build_iteration_prompts(buffers, 2, cfg, R1Wrapper(), words)
    assert all(long_program not in r.prompt and r.prompt_tokens <= 1500 for r in prompts.propose)
    cfg.rollout.content_max_tokens = 50  # nothing fits: a clear error, not an endless loop
    with pytest.raises(PromptBuildError, match="raise that limit"):
        build_iteration_prompts(buffers, 2, cfg, R1Wrapper(), words)


def test_over_long_solve_prompts_are_dropped_and_padded() -> None:
    cfg = config("rollout.batch_size=4", "tasks.types=[deduction]")
    buffers = Buffers.initial(cfg.buffer, 0)
    long_program = "def f(a):\n    return a" + " + 0" * 2000
    short = Triplet("def f(a):\n    return -a", "2", "-2")
    buffers.add_step(1, {TaskType.DEDUCTION: [Triplet(long_program, "1", "1"), short], TaskType.ABDUCTION: [], TaskType.INDUCTION: []})
    cfg.rollout.content_max_tokens = 1500
    cfg.tasks.references = 0
    prompts = build_iteration_prompts(buffers, 2, cfg, R1Wrapper(), words)
    tasks = [r.task for r in prompts.solve]
    assert len(tasks) == 4 and all(t.program != long_program for t in tasks)


def test_prompt_table_is_readable_with_pandas(tmp_path) -> None:
    cfg = config()
    prompts = build_iteration_prompts(Buffers.initial(cfg.buffer, 0), 1, cfg, R1Wrapper(), words)
    path = tmp_path / "solve_prompts.parquet"
    write_parquet_atomic(prompts_table(1, prompts.solve), path)
    frame = pd.read_parquet(path)
    assert list(frame.columns) == PROMPT_SCHEMA.names
    induction = frame[frame["group"] == "induction_solve"].iloc[0]
    assert list(induction["inputs"])[:2] == ["'Hello world'", "1"] and induction["message"]
    deduction = frame[frame["group"] == "deduction_solve"].iloc[0]
    assert deduction["output"] == "'Hello world'" and deduction["inputs"] is None
