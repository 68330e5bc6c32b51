"""Benchmark loading (local files, the hub path with the network replaced, the generic format,
bad data), prompts and prediction extraction, and the Wilson interval. No sandbox, no model."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from azr.eval.benchmarks import hub
from azr.eval.benchmarks.registry import get_benchmark
from azr.eval.benchmarks.loaders import CRUXEVAL_HUB_ID, hub_id_of, load_cruxeval, load_custom
from azr.eval.benchmarks.problems import CodeProblem, EvalDataError, ReasoningProblem
from azr.eval.prompting.azr_prompts import build_prompt, extract_prediction, truncate_at_stops
from azr.eval.scoring.stats import wilson_interval
from azr.selfplay.task_types import TaskType
from azr.selfplay.prompts.chat_format import R1Wrapper

FIXTURE = Path(__file__).parents[1] / "fixtures" / "eval" / "cruxeval_mini.jsonl"


def write_lines(path: Path, lines: list[object]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_cruxeval_from_a_local_file_keeps_file_order_and_limits() -> None:
    problems = get_benchmark("CRUXEval_O").load(str(FIXTURE), limit=3)
    assert [p.id for p in problems] == ["crux_0", "crux_1", "crux_2"]
    assert all(isinstance(p, ReasoningProblem) and p.task is TaskType.DEDUCTION for p in problems)
    assert get_benchmark("cruxeval-i").load(str(FIXTURE))[5].task is TaskType.ABDUCTION
    with pytest.raises(EvalDataError, match="at least 1"):
        get_benchmark("cruxeval-o").load(str(FIXTURE), limit=0)


def test_bad_benchmark_rows_are_all_reported(tmp_path: Path) -> None:
    """Each unusable row is skipped and named (it is scored as a failure later); a file with no
    usable row is refused with every reason."""
    row = {"code": "def f(x):\n    return x", "input": "1", "output": "1", "id": "a"}
    path = write_lines(tmp_path / "bad.jsonl", [row, {**row, "id": "b", "output": 1}, row, {"id": "c"}])
    problems = load_cruxeval(str(path), TaskType.DEDUCTION)
    assert [p.id for p in problems] == ["a"]
    skipped = {s.where: (s.id, s.reason) for s in problems.skipped}
    assert skipped["bad.jsonl line 2"] == ("b", "missing or non-string output")
    assert skipped["bad.jsonl line 3"] == ("a@2", "duplicate id") and skipped["bad.jsonl line 4"][0] == "c"
    write_lines(path, [{**row, "output": 1}, {"id": "c"}])
    with pytest.raises(EvalDataError) as error:
        load_cruxeval(str(path), TaskType.DEDUCTION)
    assert "no usable row" in str(error.value) and "line 1: missing or non-string output" in str(error.value)
    assert "line 2" in str(error.value)
    write_lines(path, [row, "{not json"])
    with pytest.raises(EvalDataError, match="line 2: not JSON"):
        load_cruxeval(str(path), TaskType.DEDUCTION)


def test_missing_data_and_unknown_benchmarks_are_clear(tmp_path: Path) -> None:
    with pytest.raises(EvalDataError, match="no such file"):
        load_cruxeval(str(tmp_path / "nope.jsonl"), TaskType.DEDUCTION)
    with pytest.raises(EvalDataError, match="unknown benchmark 'mbpp'; choose one of: cruxeval-o"):
        get_benchmark("mbpp")
    with pytest.raises(EvalDataError, match="needs --data"):
        load_custom(None)


def test_the_generic_format(tmp_path: Path) -> None:
    rows = [
        {"id": "o1", "task": "output", "code": "def f(x):\n    return x * 2", "input": "4", "output": "8"},
        {"id": "i1", "task": "Abduction", "code": "def f(x):\n    return -x", "input": "3", "output": "-3"},
    ]
    path = write_lines(tmp_path / "my set.jsonl", rows)
    problems = get_benchmark("custom").load(str(path))
    assert [p.task for p in problems] == [TaskType.DEDUCTION, TaskType.ABDUCTION]  # type: ignore[union-attr]
    assert get_benchmark("custom").metric_key(str(path)) == "custom_my_set"
    write_lines(path, [{**rows[0], "task": "induction"}])
    with pytest.raises(EvalDataError, match="task 'induction' is not one of output, input"):
        load_custom(str(path))


def test_hub_ids_and_local_paths_are_told_apart(tmp_path: Path) -> None:
    assert hub_id_of("cruxeval-org/cruxeval") == "cruxeval-org/cruxeval"
    assert hub_id_of("hf://datasets/cruxeval-org/cruxeval") == "cruxeval-org/cruxeval"
    assert hub_id_of(str(FIXTURE)) is None
    assert hub_id_of("data/missing/file.jsonl") is None


def test_cruxeval_from_the_hub_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    asked: list[tuple[str, str, str | None]] = []

    def download(repo_id: str, filename: str, *, repo_type: str | None = None, revision: str | None = None) -> str:
        asked.append((repo_id, filename, repo_type))
        return str(FIXTURE)

    monkeypatch.setattr(hub, "datasets_installed", lambda: False)  # the path taken without `datasets`
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    problems = load_cruxeval(None, TaskType.ABDUCTION)
    assert len(problems) == 12 and asked == [(CRUXEVAL_HUB_ID, "test.jsonl", "dataset")]


def test_a_hub_dataset_with_another_layout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    parquet = tmp_path / "test-00000-of-00001.parquet"
    pd.read_json(FIXTURE, lines=True).to_parquet(parquet)

    def download(repo_id: str, filename: str, **kwargs: object) -> str:
        if filename == "test.jsonl":
            raise EntryNotFoundError("no such file")
        assert filename == "data/test-00000-of-00001.parquet"
        return str(parquet)

    class Api:
        def list_repo_files(self, repo_id: str, **kwargs: object) -> list[str]:
            return ["README.md", "data/train-00000-of-00001.parquet", "data/test-00000-of-00001.parquet"]

    monkeypatch.setattr(hub, "datasets_installed", lambda: False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    assert [p.id for p in load_cruxeval("someone/crux-copy", TaskType.DEDUCTION)][:2] == ["crux_0", "crux_1"]


def test_offline_hub_loading_says_to_pass_data(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def offline(*args: object, **kwargs: object) -> str:
        raise ConnectionError("Network is unreachable")

    monkeypatch.setattr(hub, "datasets_installed", lambda: False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(EvalDataError, match=r"cannot load the dataset 'cruxeval-org/cruxeval'.*Pass --data"):
        load_cruxeval(None, TaskType.DEDUCTION)


def test_azr_prompts_are_the_training_solve_prompts() -> None:
    problem = get_benchmark("cruxeval-o").load(str(FIXTURE), limit=1)[0]
    prompt = build_prompt(problem, "azr", R1Wrapper())
    assert prompt.endswith("Assistant: <think>") and "```input\n[3, 8, 1, 4, 6]\n```" in prompt
    assert "Work Out the Output" in prompt
    abduction = get_benchmark("cruxeval-i").load(str(FIXTURE), limit=1)[0]
    assert "```output\n[6, 4, 8, 3, 1]\n```" in build_prompt(abduction, "azr", R1Wrapper())
    response = " f keeps evens reversed </think> <answer>```output\n[6, 4, 8, 3, 1]\n```</answer>"
    found = extract_prediction(problem, response, "azr")
    assert found.prediction == "[6, 4, 8, 3, 1]" and found.format_ok


def test_plain_prompts_for_base_models() -> None:
    problem = get_benchmark("cruxeval-o").load(str(FIXTURE), limit=1)[0]
    prompt = build_prompt(problem, "plain", None)
    assert prompt.endswith("assert f([3, 8, 1, 4, 6]) == ??\n[/PYTHON]\n[ANSWER]\n")
    found = extract_prediction(problem, "assert f([3, 8, 1, 4, 6]) == [6, 4, 8, 3, 1]\n[/ANSWER]\n\n[PYTHON]", "plain")
    assert found.prediction == "assert f([3, 8, 1, 4, 6]) == [6, 4, 8, 3, 1]" and found.format_ok is None
    code = CodeProblem("t/0", "def add(a, b):\n    \"\"\"Sum.\"\"\"\n", "def check(c):\n    assert c(1, 2) == 3\n", "add")
    assert build_prompt(code, "plain", None) == code.prompt
    assert truncate_at_stops("    return a + b\n\ndef extra():\n    pass") == "    return a + b\n"
    azr = build_prompt(code, "azr", R1Wrapper())
    assert "```python\ndef add(a, b):" in azr and azr.endswith("<think>")
    answer = " easy </think><answer>```python\ndef add(a, b):\n    return a + b\n```</answer>"
    assert extract_prediction(code, answer, "azr").prediction == "def add(a, b):\n    return a + b"


@pytest.mark.parametrize(
    ("correct", "total", "low", "high"),
    [(0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (5, 10, 0.2366, 0.7634), (82, 164, 0.4243, 0.5757)],
)
def test_wilson_interval(correct: int, total: int, low: float, high: float) -> None:
    got_low, got_high = wilson_interval(correct, total)
    assert got_low == pytest.approx(low, abs=1e-4) and got_high == pytest.approx(high, abs=1e-4)


def test_wilson_interval_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
