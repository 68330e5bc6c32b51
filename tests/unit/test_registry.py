"""The stage table (azr/pipeline/registry.py) is the one place that names the stages and their
files, and it is consistent: every stage has its function, reads only what earlier stages
wrote, and each layout writes every stage file once."""

from __future__ import annotations

import ast
from pathlib import Path

import azr
from azr.pipeline import registry
from azr.pipeline.registry import FILE_STAGES, STAGES, Layout, StageFile, parts_of, stages_for

AZR = Path(azr.__file__).resolve().parent
FILE_NAMES = {file.value for file in StageFile}


def _stage_file_literals(path: Path) -> list[str]:
    """`file:line name` for every string constant of `path` that is exactly a stage file name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [f"{path}:{node.lineno} {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in FILE_NAMES]


def test_stage_file_names_are_spelled_only_in_the_registry() -> None:
    registry_file = Path(registry.__file__).resolve()
    found = [hit for path in sorted(AZR.rglob("*.py")) if path.resolve() != registry_file
             for hit in _stage_file_literals(path)]
    assert found == [], "use azr.pipeline.registry.StageFile instead of:\n" + "\n".join(found)


def test_the_literal_check_sees_a_literal(tmp_path: Path) -> None:
    sample = tmp_path / "probe.py"
    sample.write_text('PATH = "scored.parquet"\nTEXT = "see scored.parquet"\nrun.stage_path(1, "update.json")\n',
                      encoding="utf-8")
    assert [hit.split(" ", 1)[1] for hit in _stage_file_literals(sample)] == ["'scored.parquet'", "'update.json'"]


def test_every_stage_has_its_function() -> None:
    from azr.pipeline import stages

    for stage in STAGES:
        assert stage.function is getattr(stages, stage.name)
        assert callable(stage.function)


def test_each_layout_writes_every_stage_file_once_and_reads_only_what_came_before() -> None:
    for merge_calls in (False, True):
        written: list[StageFile] = []
        for stage in stages_for(merge_calls):
            assert set(stage.reads) <= set(written), f"{stage.name} reads a file no earlier stage wrote"
            written += [file for file in stage.files if file not in written or stage.always_runs]
        assert sorted(written) == sorted(StageFile)


def test_the_layouts_are_the_known_stage_orders() -> None:
    assert [s.name for s in stages_for(False)] == ["build_prompts", "propose", "validate", "mc_rollouts", "solve",
                                                   "safety", "rewards", "update", "commit"]
    assert [s.name for s in stages_for(True)] == ["build_prompts", "generate_propose_solve", "validate", "mc_rollouts",
                                                  "safety", "rewards", "update", "commit"]


def test_a_merged_stage_writes_exactly_the_files_of_its_parts() -> None:
    merged = [stage for stage in STAGES if stage.merges]
    assert merged and all(Layout.MERGED in s.layouts and Layout.SEPARATE not in s.layouts for s in merged)
    for stage in merged:
        parts = parts_of(stage)
        assert all(part in FILE_STAGES and Layout.SEPARATE in part.layouts for part in parts)
        assert dict(stage.writes) == {f: s for part in parts for f, s in part.writes.items()}


def test_the_prefect_tasks_come_from_the_table() -> None:
    from tasks.stages import stage_tasks

    for merge_calls in (False, True):
        tasks = stage_tasks(merge_calls)
        assert [t.name for t in tasks] == [s.task_name for s in stages_for(merge_calls)]
        assert [t.retries for t in tasks] == [s.retries for s in stages_for(merge_calls)]
