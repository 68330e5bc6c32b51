"""`azr eval run` end to end on a tiny random model (standalone, and nested under a training
run's MLflow run), and `azr eval score` with missing, extra, duplicate and malformed lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.entry import app

runner = CliRunner()
FIXTURE = Path(__file__).parents[1] / "fixtures" / "eval" / "cruxeval_mini.jsonl"


def invoke(args: list[str]) -> Any:
    return runner.invoke(app, ["eval", *args], env={"COLUMNS": "200"})


def flat(text: str) -> str:
    return " ".join(text.split())


def test_score_reports_missing_extra_duplicate_and_malformed_lines(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "crux_0", "prediction": "[6, 4, 8, 3, 1]"}),
        json.dumps({"id": "crux_1", "prediction": "'wrong'"}),
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"id": "crux_2"}),
        json.dumps({"id": "crux_3", "prediction": 5}),
        json.dumps({"id": "ghost", "prediction": "1"}),
        json.dumps({"id": "crux_0", "prediction": "[0]"}),
        json.dumps({"id": "crux_4", "prediction": "assert f(2, 3) == 2.5"}),
        "",
        json.dumps({"id": "crux_5", "prediction": "f('Racecar'.lower())"}),
    ]
    predictions = tmp_path / "preds.jsonl"
    predictions.write_text("\n".join(lines) + "\n")
    args = ["score", "-b", "cruxeval-o", "--data", str(FIXTURE), "--predictions", str(predictions), "--preset", "tiny"]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    err = flat(result.stderr)
    assert "missing: 8" in err and "'crux_11'" in err
    assert "extra: 1" in err and "'ghost'" in err
    assert "duplicate: 1" in err and "'crux_0'" in err
    assert "malformed: 4" in err
    for reason in ("line 3: not JSON", "line 4: a JSON list, not an object", "line 5: no prediction", "line 6: prediction must be a string"):
        assert reason in err
    assert "16.7% (95% CI" in result.stdout and "2/12" in result.stdout

    out = tmp_path / "preds-scored"
    frame = pd.read_parquet(out / "results.parquet")
    assert len(frame) == 12 and frame["correct"].sum() == 2
    assert frame.set_index("id")["status"].to_dict()["crux_5"] == "restates_call"
    assert frame["status"].value_counts().to_dict() == {"missing": 8, "ok": 3, "restates_call": 1}
    assert frame.set_index("id").loc["crux_0", "prediction"] == "[6, 4, 8, 3, 1]"  # the first line counts
    assert len((out / "results.jsonl").read_text().splitlines()) == 12
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["eval/cruxeval_o/accuracy"] == pytest.approx(2 / 12)
    assert (summary["missing"], summary["extra"], summary["duplicates"], summary["malformed"]) == (8, 1, 1, 4)


def test_score_accepts_humaneval_samples(tmp_path: Path) -> None:
    from azr.eval.benchmarks.loaders import load_humaneval

    first = load_humaneval(None)[0]
    predictions = tmp_path / "samples.jsonl"
    predictions.write_text(json.dumps({"task_id": first.id, "completion": first.canonical_solution}) + "\n")
    result = invoke(["score", "-b", "humaneval", "-P", str(predictions), "--out", str(tmp_path / "v"), "-p", "tiny"])
    assert result.exit_code == 0, result.output
    assert "1/164" in result.stdout and "missing: 163" in flat(result.stderr)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["score", "-b", "mbpp", "-P", "x.jsonl"], "unknown benchmark 'mbpp'"),
        (["score", "-b", "cruxeval-o", "--data", str(FIXTURE), "-P", "/nonexistent/p.jsonl"], "/nonexistent/p.jsonl does not exist"),
        (["run", "-b", "custom", "-m", "tiny-random"], "needs --data"),
        (["run", "-b", "cruxeval-o", "--data", str(FIXTURE), "-m", "tiny-random", "--prompt", "fancy"], "--prompt 'fancy'"),
        (["run", "-b", "cruxeval-o", "--data", str(FIXTURE), "-m", "tiny-random", "--step", "3"], "--step is for training run directories"),
    ],
)
def test_bad_input_is_one_paragraph_and_exit_2(args: list[str], message: str) -> None:
    result = invoke(args)
    assert result.exit_code == 2, result.output
    assert "error:" in result.stderr and message in flat(result.stderr)
    assert "Traceback" not in result.output


def test_a_run_directory_without_a_checkpoint_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    result = invoke(["run", "-b", "cruxeval-o", "--data", str(FIXTURE), "-m", str(tmp_path / "run")])
    assert result.exit_code == 2 and "without a complete checkpoint" in flat(result.stderr)


def test_a_directory_that_is_no_model_fails_with_exit_1(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    args = ["run", "-b", "cruxeval-o", "--data", str(FIXTURE), "-m", str(tmp_path / "empty"),
            "--out", str(tmp_path / "o"), "-p", "tiny"]
    result = invoke(args)
    assert result.exit_code == 1 and "cannot generate with" in flat(result.stderr)


def test_run_end_to_end_on_a_tiny_model(tmp_path: Path, bundled_copy: Path) -> None:
    from mlflow import MlflowClient

    out = tmp_path / "out"
    args = ["run", "-b", "cruxeval-o", "-m", "tiny-random", "--data", str(FIXTURE), "--limit", "3",
            "--max-new-tokens", "4", "--preset", "tiny", "--out", str(out)]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.stdout and "/3)" in result.stdout and "MLflow run" in result.stdout

    frame = pd.read_parquet(out / "results.parquet")
    assert list(frame["id"]) == ["crux_0", "crux_1", "crux_2"]
    assert set(frame.columns) >= {"id", "prompt", "response", "prediction", "correct", "status", "error"}
    assert frame["prompt"].str.endswith("Assistant: <think>").all()  # the tiny preset's r1 wrapper
    assert (frame["response_tokens"] <= 4).all() and frame["status"].isin(["ok", "empty", "restates_call"]).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == 3 and summary["decoding"] == "greedy"

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("azr-eval")
    assert experiment is not None and experiment.artifact_location == (out / "mlartifacts").resolve().as_uri()
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.metrics["eval/cruxeval_o/problems"] == 3
    assert run.data.metrics["eval/cruxeval_o/accuracy"] == pytest.approx(frame["correct"].mean())
    assert run.data.params["prompt"] == "azr" and run.data.params["max_new_tokens"] == "4"
    assert "mlflow.parentRunId" not in run.data.tags
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"results.parquet", "summary.json", "plan.json"}

    again = invoke(args)  # the same evaluation in the same directory: finished stages are reused
    assert again.exit_code == 0 and "resuming" in flat(again.stderr)
    assert len(client.search_runs([experiment.experiment_id])) == 1


def make_run_dir(root: Path, tokenizer: Any, steps: list[int]) -> tuple[Path, str, str]:
    """A training run directory as the training flow leaves it: config, run.json, checkpoints."""
    from mlflow import MlflowClient

    from azr.pipeline.atomic_io import atomic_write_json, atomic_write_text
    from azr.config.loading import build_config, config_to_yaml
    from azr.engine.models.loading import tiny_model

    run_dir = root / "train-run"
    atomic_write_text(run_dir / "config.yaml", config_to_yaml(build_config("tiny")))
    for step in steps:
        checkpoint = run_dir / "checkpoints" / f"step-{step:08d}"
        model = tiny_model(step, tokenizer=tokenizer)
        model.save_pretrained(checkpoint / "export")
        tokenizer.save_pretrained(checkpoint / "export")
        atomic_write_json(checkpoint / "meta.json", {"step": step, "saved_at": 0, "metadata": {}})
        atomic_write_json(checkpoint / "COMPLETE", {"step": step})
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("azr-tiny", artifact_location=(root / "mlartifacts").as_uri())
    parent = client.create_run(experiment_id, run_name="train-run").info.run_id
    atomic_write_json(run_dir / "run.json", {"mlflow_run_id": parent, "tracking_uri": tracking_uri, "experiment": "azr-tiny"})
    return run_dir, tracking_uri, parent


def test_run_on_a_training_run_nests_under_it(tmp_path: Path, tokenizer: Any) -> None:
    from mlflow import MlflowClient

    run_dir, tracking_uri, parent = make_run_dir(tmp_path, tokenizer, steps=[1, 2])
    args = ["run", "-b", "cruxeval-i", "-m", str(run_dir), "--data", str(FIXTURE), "--limit", "2", "--max-new-tokens", "3"]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert f"nested under run {parent}" in flat(result.stdout)

    (out,) = (run_dir / "eval").iterdir()
    assert out.name.startswith("cruxeval_i-azr-step00000002-")
    plan = json.loads((out / "plan.json").read_text())
    assert plan["step"] == 2 and plan["resolved_model"].endswith("step-00000002/export")
    assert plan["config"]["model"]["prompt_wrapper"] == "r1"  # from the run's own config.yaml

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("azr-tiny")
    children = client.search_runs([experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    assert len(children) == 1
    history = client.get_metric_history(children[0].info.run_id, "eval/cruxeval_i/accuracy")
    assert [m.step for m in history] == [2]

    older = invoke(["run", "-b", "cruxeval-i", "-m", str(run_dir), "--step", "1", "--data", str(FIXTURE), "--limit", "1",
                    "--max-new-tokens", "2", "--out", str(tmp_path / "step1"), "--no-mlflow"])
    assert older.exit_code == 0, older.output
    assert json.loads((tmp_path / "step1" / "plan.json").read_text())["step"] == 1
    assert not (tmp_path / "step1" / "mlflow.json").exists()


def test_a_checkpoint_pruned_after_prepare_is_still_evaluated(tmp_path: Path, tokenizer: Any) -> None:
    import shutil

    from azr.eval import runner

    run_dir, _, _ = make_run_dir(tmp_path, tokenizer, steps=[3])
    request = runner.EvalRequest(benchmark="cruxeval-o", model=str(run_dir), data=str(FIXTURE), limit=1,
                                 max_new_tokens=2, out_dir=str(tmp_path / "out"), mlflow=False)
    out_dir, _ = runner.prepare(request)
    plan = runner.read_plan(out_dir)
    assert plan.load_from == str((out_dir / "model").resolve()) and plan.step == 3
    shutil.rmtree(run_dir / "checkpoints" / "step-00000003")  # the training run moved on and pruned it
    runner.generate(out_dir)
    assert runner.score(out_dir)["problems"] == 1
