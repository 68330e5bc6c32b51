"""In-training validation as the original ran it (docs/algorithm.md §11.3): CRUXEval-I/O and
LiveCodeBench execution in the paper presets, loaded as the evaluation suite loads them; a
benchmark whose data cannot be had is skipped with one message and the run goes on."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from azr.config.loading import load_preset
from azr.config.schema import AZRConfig
from azr.eval.benchmarks.lcb_execution import execution_problem
from azr.eval.benchmarks.registry import get_benchmark
from azr.selfplay.task_types import TaskType

ROW = {"id": "lcb-7", "code": "def countSeniors(details: List[str]) -> int:\n    c = Counter(d[11:13] for d in details)\n"
       "    return sum(v for k, v in c.items() if int(k) > 60)",
       "input": "countSeniors(details = ['7868190130M7522', '5303914400F9211'])", "output": "2"}


def test_lcb_execution_rows_become_input_prediction_problems(tmp_path: Path) -> None:
    identifier, program, arguments, output = execution_problem(ROW)
    assert identifier == "lcb-7" and output == "2"
    assert "def f(details: List[str]) -> int:" in program
    assert program.splitlines()[:2] == ["from collections import Counter", "from typing import List"]
    assert arguments == "details = ['7868190130M7522', '5303914400F9211']"
    data = tmp_path / "execution.jsonl"
    data.write_text(json.dumps(ROW) + "\n")
    (problem,) = get_benchmark("lcb-execution").load(str(data))
    assert problem.task is TaskType.ABDUCTION  # the original posed it as input prediction
    assert isinstance(execution_problem({**ROW, "input": "other(1)"}), str)


@pytest.mark.parametrize("preset", ["qwen2.5-coder-7b", "qwen2.5-7b", "qwen2.5-coder-3b", "qwen2.5-14b",
                                    "qwen2.5-coder-14b", "llama-3.1-8b"])
def test_paper_presets_validate_as_the_original(preset: str) -> None:
    config = AZRConfig.model_validate(load_preset(preset))
    assert config.eval.benchmarks == ["cruxeval-i", "cruxeval-o", "lcb-execution"]
    assert config.eval.limit is None and config.trainer.eval_every == 10
    assert [get_benchmark(name).key for name in config.eval.benchmarks] == ["cruxeval_i", "cruxeval_o",
                                                                            "livecodebench_execution"]


def test_unavailable_data_is_said_once_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from azr.eval import in_training

    missing = str(tmp_path / "nowhere.jsonl")
    with caplog.at_level(logging.WARNING, logger="azr.eval.in_training"):
        assert in_training._available_problems("cruxeval-o", missing, 10) is None
        assert in_training._available_problems("cruxeval-o", missing, 10) is None
    assert len([r for r in caplog.records if "skips cruxeval-o" in r.getMessage()]) == 1
    present = tmp_path / "crux.jsonl"
    present.write_text(json.dumps({"id": "c0", "code": "def f(x):\n    return x", "input": "1", "output": "1"}) + "\n")
    assert len(in_training._available_problems("cruxeval-o", str(present), 10)) == 1
