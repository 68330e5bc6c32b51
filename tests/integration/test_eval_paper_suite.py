"""The paper's suite end to end on a tiny random model and fixture files in the public layouts:
`azr eval run --suite paper` prints the table (the numbers are ~0), writes per-problem Parquet
and an MLflow run with a child per benchmark; `azr eval score` scores every benchmark from a
prediction file; `--samples` reports pass@k; the suite as `eval.benchmarks` of training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.entry import app
from azr.eval.benchmarks.registry import SUITES, get_benchmark
from tests.support.paper_fixtures import write_data_dir, write_jsonl

runner = CliRunner()
NINE = SUITES["paper"]


def invoke(args: list[str]) -> Any:
    return runner.invoke(app, ["eval", *args], env={"COLUMNS": "220"})


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_data_dir(tmp_path_factory.mktemp("paper-data"))


def test_the_suite_prints_the_papers_table(tmp_path: Path, data_dir: Path, bundled_copy: Path) -> None:
    from mlflow import MlflowClient

    out = tmp_path / "suite"
    result = invoke(["run", "--suite", "paper", "-m", "tiny-random", "--data-dir", str(data_dir), "--limit", "2",
                     "--max-new-tokens", "6", "--preset", "tiny", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = flat(result.stdout)
    for header in ("HumanEval+", "MBPP+", "LCB", "AIME24", "AIME25", "AMC23", "MATH500", "Minerva", "Olympiad",
                   "Code Avg", "Math Avg", "Total", "pass@1", "base tests"):
        assert header in text
    table = json.loads((out / "table.json").read_text())
    assert [row["benchmark"] for row in table["rows"]] == list(NINE)
    assert table["code_benchmarks"] == 3 and table["math_benchmarks"] == 6
    scores = [row["score"] for row in table["rows"]]
    assert table["code_avg"] == pytest.approx(sum(scores[:3]) / 3)
    assert table["math_avg"] == pytest.approx(sum(scores[3:]) / 6)
    assert table["total"] == pytest.approx((table["code_avg"] + table["math_avg"]) / 2)
    assert "| HumanEval+ | MBPP+ | LCB |" in (out / "table.md").read_text()

    frame = pd.read_parquet(out / "results.parquet")
    assert set(frame["benchmark"]) == set(NINE)
    assert frame.groupby("benchmark").size().to_dict()["olympiadbench"] == 2
    assert frame[frame["benchmark"] == "humaneval-plus"]["base_correct"].notna().all()
    plan = json.loads((out / "aime24" / "plan.json").read_text())
    assert plan["max_new_tokens"] == 6 and plan["data"] == str(data_dir / "aime24" / "test.jsonl")

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("azr-eval")
    runs = client.search_runs([experiment.experiment_id])
    (suite_run,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == suite_run.info.run_id]
    assert len(children) == 9
    assert suite_run.data.metrics["eval/paper/total"] == pytest.approx(table["total"])
    assert "eval/humaneval_plus/base_pass_at_1" in suite_run.data.metrics


def test_a_part_of_the_suite_and_bad_requests(tmp_path: Path, data_dir: Path, bundled_copy: Path) -> None:
    out = tmp_path / "part"
    result = invoke(["run", "--suite", "paper", "--benchmarks", "mbpp-plus,amc23", "-m", "tiny-random",
                     "--data-dir", str(data_dir), "--max-new-tokens", "4", "--preset", "tiny", "--out", str(out),
                     "--no-mlflow", "--samples", "3"])
    assert result.exit_code == 0, result.output
    table = json.loads((out / "table.json").read_text())
    assert [row["benchmark"] for row in table["rows"]] == ["mbpp-plus", "amc23"]
    assert "Averages over the 1 code and 1 math" in (out / "table.md").read_text()
    summary = json.loads((out / "amc23" / "summary.json").read_text())
    assert summary["samples"] == 3 and set(summary["pass_at_k"]) == {"1", "2", "3"}
    assert summary["decoding"] == "sampled n=3 T=1"
    assert len(pd.read_parquet(out / "amc23" / "results.parquet")) == 3
    assert "pass@3" in flat(result.stdout)

    for args, message in [
        (["run", "--suite", "paper", "--benchmarks", "cruxeval-o", "-m", "tiny-random"], "not in the paper suite"),
        (["run", "--suite", "nope", "-m", "tiny-random"], "--suite 'nope' is unknown"),
        (["run", "-b", "aime24", "--suite", "paper", "-m", "tiny-random"], "give either --benchmark"),
        (["run", "--suite", "paper", "-m", "tiny-random", "--data", "aime24"], "NAME=PATH"),
        (["run", "-b", "aime24", "-m", "tiny-random", "--samples", "2", "--temperature", "0",
          "--data", str(data_dir / "aime24" / "test.jsonl")], "needs a temperature above 0"),
    ]:
        failed = invoke(args)
        assert failed.exit_code == 2 and message in flat(failed.stderr), (args, failed.output)


RIGHT_ANSWERS: dict[str, list[dict[str, str]]] = {
    "humaneval-plus": [{"task_id": "HumanEval/0", "solution": "def add_pair(a, b):\n    return a + b\n"},
                       {"task_id": "HumanEval/32", "completion": "    return 1.0\n"}],
    "mbpp-plus": [{"task_id": "Mbpp/2", "solution": "```python\ndef similar_elements(a, b):\n    return tuple(set(a) & set(b))\n```"},
                  {"task_id": "Mbpp/17", "solution": "def square_perimeter(a):\n    return 4 * a\n"}],
    "livecodebench": [
        {"id": "1", "prediction": "class Solution:\n    def twoSum(self, nums, target):\n"
                                  "        return next([i, j] for i in range(len(nums)) for j in range(i + 1, len(nums)) "
                                  "if nums[i] + nums[j] == target)\n"},
        {"id": "abc300_a", "prediction": "input()\nprint(sum(map(float, input().split())))\n"}],
    "aime24": [{"id": "60", "prediction": "<answer>\\boxed{4}</answer>"}],
    "aime25": [{"id": "I-1", "response": "so \\boxed{9}"}],
    "amc23": [{"id": "0", "prediction": "27"}],
    "math500": [{"id": "test/algebra/1.json", "prediction": "\\boxed{\\dfrac{1}{2}}"}],
    "minerva-math": [{"id": "0", "prediction": "\\boxed{5}"}],
    "olympiadbench": [{"id": "1606", "prediction": "\\boxed{-2, 2}"}, {"id": "1607", "prediction": "\\boxed{(-1, 1)}"}],
}
FILES = {"humaneval-plus": "HumanEvalPlus-v0.1.10.jsonl.gz", "mbpp-plus": "MbppPlus-v0.2.0.jsonl.gz",
         "livecodebench": "livecodebench", "minerva-math": "minerva_math/test.jsonl"}


@pytest.mark.parametrize("name", NINE)
def test_score_works_for_every_benchmark(tmp_path: Path, data_dir: Path, name: str) -> None:
    predictions = write_jsonl(tmp_path / "preds.jsonl", RIGHT_ANSWERS[name])
    data = data_dir / FILES.get(name, f"{name}/test.jsonl")
    result = invoke(["score", "-b", name, "-d", str(data), "-P", str(predictions), "--preset", "tiny"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "preds-scored" / "summary.json").read_text())
    assert summary["accuracy"] == 1.0 and summary["missing"] == 0, summary


def test_the_suite_can_be_the_benchmarks_of_a_training_run(data_dir: Path) -> None:
    from azr.config.loading import build_config
    from azr.eval.in_training import expand_specs

    config = build_config("tiny", None, ["eval.benchmarks=[paper, cruxeval-o]", f"eval.data_dir={data_dir}"])
    specs = expand_specs([(name, config.eval.data_source(name)) for name in config.eval.benchmarks], config.eval.data_dir)
    assert [name for name, _ in specs] == [*NINE, "cruxeval-o"]
    assert dict(specs)["aime24"] == str(data_dir / "aime24" / "test.jsonl")
    assert dict(specs)["livecodebench"] == str(data_dir / "livecodebench")


def test_in_training_a_part_of_the_suite_is_scored_with_its_rules(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from azr.config.loading import build_config
    from azr.engine.api import Completion
    from azr.eval.in_training import evaluate_policy
    from azr.eval.prompting.azr_prompts import build_prompt
    from azr.sandbox import SandboxExecutor
    from azr.selfplay.prompts.chat_format import R1Wrapper

    monkeypatch.setenv("AZR_DATA_DIR", str(data_dir))  # the loaders' default folder
    config = build_config("tiny", None, [f"eval.data_dir={data_dir}"])
    problems = {name: get_benchmark(name).load(None) for name in ("mbpp-plus", "amc23")}
    right = {"Mbpp/2": "def similar_elements(a, b):\n    return tuple(set(a) & set(b))",
             "Mbpp/17": "def square_perimeter(a):\n    return a * a"}  # the second is wrong
    responses = {}
    for problem in problems["mbpp-plus"]:
        responses[build_prompt(problem, "azr", R1Wrapper())] = f" ok </think>\n<answer>```python\n{right[problem.id]}\n```</answer>"
    for problem in problems["amc23"]:
        responses[build_prompt(problem, "azr", R1Wrapper())] = " ok </think>\n<answer>\\boxed{27}</answer>"

    class Scripted:
        def generate(self, prompts: list[str], settings: Any) -> list[list[Completion]]:
            return [[Completion(responses[p], (1,), (2,), "stop")] for p in prompts]

    with SandboxExecutor.from_run_config(config) as executor:
        metrics = evaluate_policy(Scripted(), config, [("mbpp-plus", None), ("amc23", None)], None, executor)
    assert metrics["eval/mbpp_plus/accuracy"] == 0.5 and metrics["eval/amc23/accuracy"] == 1.0
    assert metrics["eval/mbpp_plus/base_accuracy"] == 0.5 and metrics["eval/mbpp_plus/format_rate"] == 1.0

