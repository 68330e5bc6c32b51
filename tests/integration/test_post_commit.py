"""The work after an iteration's buffer commit (metrics.json, MLflow metrics, dataset input,
artifacts, logged model) survives a kill at any point of it: finishing the iteration again, as
a resume does, logs exactly what is missing, once. Real tiny policy in process, real sandbox,
real SQLite MLflow store."""

from __future__ import annotations

import json
from collections.abc import Iterator

import mlflow
import pytest

from azr.config.loading import build_config
from azr.engine.rank.policy import Policy
from azr.pipeline.context import RunContext
from azr.pipeline.run_dir import open_run_dir
from azr.pipeline.stages import run_iteration
from azr.pipeline.run import close_resources, finish_iteration, next_step, open_resources, post_commit_pending
from azr.pipeline.mlflow_run import Tracker

CONFIG = build_config("tiny", overrides=["trainer.iterations=1", "sandbox.timeout_s=3", "tracking.sample_rows=2"])


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunContext, Tracker]]:
    """A run whose only iteration is committed (and checkpointed) and nothing after: the state a
    kill right after the buffer commit leaves."""
    run, config = open_run_dir(tmp_path_factory.mktemp("post") / "runs" / "committed", CONFIG, resume=False)
    res = open_resources(run, config, policy=Policy.create(config, cpu=True))
    run_iteration(res, 1)
    tracker = Tracker(run, config)
    tracker.start()
    yield res, tracker
    tracker.finish("FINISHED")
    close_resources(res)


def _logged(tracker: Tracker) -> dict:
    client = mlflow.MlflowClient(tracker.tracking_uri)
    run = client.get_run(tracker.run_id)
    models = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{tracker.run_id}'")
    return {
        "reward": [m.step for m in client.get_metric_history(tracker.run_id, "overall/reward_mean")],
        "inputs": sorted(d.dataset.name for d in run.inputs.dataset_inputs),
        "models": sorted((m.status.name, m.params.get("step")) for m in models),
        "outputs": len(run.outputs.model_outputs) if run.outputs else 0,
        "files": {a.path for a in client.list_artifacts(tracker.run_id, "iterations/000001")},
    }


def test_a_kill_after_the_commit_loses_nothing_and_logs_once(committed: tuple[RunContext, Tracker]) -> None:
    res, tracker = committed
    run = res.run
    metrics_path = run.stage_path(1, "metrics.json")
    assert post_commit_pending(run, res.config, next_step(run)) == [1]  # no metrics.json yet: resume must finish it

    # Killed in the middle of the logging: the metrics batch and a half-uploaded model are in
    # MLflow, metrics.json still says nothing was logged (the file a resume finds).
    first = finish_iteration(res, 1)  # writes metrics.json only (no tracker)
    assert json.loads(metrics_path.read_text())["logged"] is False
    tracker.log_metrics(1, first)
    client = tracker.client
    client.create_logged_model(tracker.experiment_id, name="policy", source_run_id=tracker.run_id, params={"step": "1"})

    metrics = finish_iteration(res, 1, tracker)  # the resume
    assert metrics == first
    record = json.loads(metrics_path.read_text())
    assert record["logged"] is True and record["logged_parts"] == ["metrics", "findings", "tasks", "files", "checkpoint"]
    logged = _logged(tracker)
    assert logged["reward"] == [1]  # once, though the batch was logged before the kill
    assert logged["inputs"] == ["azr-tasks-000001"] or logged["inputs"] == []  # tasks only if a proposal was valid
    assert logged["models"] == [("READY", "1")] and logged["outputs"] == 1  # the unfinished model replaced
    assert {"iterations/000001/metrics.json", "iterations/000001/samples"} <= logged["files"]

    # A metrics.json from before (logged: false, no parts) and a damaged one: logged again, still once.
    metrics_path.write_text(json.dumps({"metrics": first, "findings": [], "logged": False}))
    finish_iteration(res, 1, tracker)
    metrics_path.write_text("{not json")
    again = finish_iteration(res, 1, tracker)  # computed again from the stage files
    assert {k: v for k, v in again.items() if "rss" not in k} == {k: v for k, v in first.items() if "rss" not in k}
    assert _logged(tracker) == logged
    assert post_commit_pending(run, res.config, next_step(run)) == [1]  # the flow has not announced it yet


def test_each_metric_batch_is_logged_once(committed: tuple[RunContext, Tracker]) -> None:
    _, tracker = committed
    many = {f"group{i:04d}/value": float(i) for i in range(1500)}  # two batches
    tracker.log_metrics(7, dict(list(many.items())[:900]))  # the first batch, then a kill
    tracker.log_metrics(7, many, once=True)
    client = tracker.client
    for key in ("group0000/value", "group0899/value", "group0900/value", "group1499/value"):
        assert [m.step for m in client.get_metric_history(tracker.run_id, key)] == [7], key
