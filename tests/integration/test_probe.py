"""The frozen probe with real parts: the shipped set rebuilds identically through the sandbox,
and a run probes the tiny model before training, writes and logs it once, and draws the curve."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from azr.config.loading import build_config
from azr.eval.learning_verdict import FEW_ITERATIONS
from azr.eval.probe import load_probe_set
from azr.engine.rank.policy import Policy
from azr.pipeline.mlflow_run import Tracker
from azr.pipeline.probe_run import PLOT_NAME, probe_if_due, probe_path, run_learning_verdict
from azr.pipeline.run import open_resources
from azr.pipeline.run_dir import open_run_dir
from azr.sandbox import SandboxExecutor
from azr.selfplay.seed_tasks import resolve_seed_path

pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def test_the_shipped_probe_set_is_what_the_script_builds() -> None:
    from azr.config.schema import TaskConfig
    from scripts.make_probe_set import build

    with SandboxExecutor(workers=2) as executor:
        items = build(executor, TaskConfig())
    shipped = resolve_seed_path(Path(build_config("cpu").trainer.probe_file))
    assert [json.loads(line) for line in shipped.read_text().splitlines()] == items


def test_a_run_probes_before_training_once_and_logs_the_curve(tmp_path: Path) -> None:
    config = build_config("tiny", overrides=[
        "trainer.probe_every=1", "trainer.probe_file=probes/cpu_probe.jsonl", "rollout.max_new_tokens=4",
        "model.dtype=float32", "tracking.system_metrics=false",
    ])
    run, config = open_run_dir(tmp_path / "runs" / "probe", config, resume=False)
    tracker = Tracker(run, config)
    tracker.start()
    policy = Policy.create(config, cpu=True)
    with SandboxExecutor.from_run_config(config) as executor:
        res = open_resources(run, config, executor=executor, policy=policy)
        prompts: list[str] = []
        generate = policy.generate

        def counting(batch: list[str], settings: object) -> object:
            prompts.extend(batch)
            return generate(batch, settings)

        policy.generate = counting  # type: ignore[method-assign]
        metrics = probe_if_due(res, 0, tracker)
        items = load_probe_set(config.trainer.probe_file)
        assert len(prompts) == len(items) == 48
        assert all(any(item.task.program in p for p in prompts) for item in items if item.task_type.value != "induction")
        assert metrics["probe/overall/items"] == 48 and 0.0 <= metrics["probe/overall/ci_low"] <= metrics["probe/overall/ci_high"]
        record = json.loads(probe_path(run, 0).read_text())
        assert record["logged"] and set(record["result"]["correct"]) == {item.id for item in items}

        assert probe_if_due(res, 0, tracker) == metrics and len(prompts) == 48  # done once: not asked again
        assert probe_if_due(res, 1, tracker, current=False) == {}  # weights moved on: skipped, not faked
        assert not probe_path(run, 1).exists()
    tracker.finish("FINISHED")
    client = mlflow.MlflowClient(tracker.tracking_uri)
    logged = client.get_run(tracker.run_id).data.metrics
    assert "probe/overall/accuracy" in logged and "probe/induction/ci_high" in logged
    assert [a.path for a in client.list_artifacts(tracker.run_id, "probe")] == [f"probe/{PLOT_NAME}"]
    assert run_learning_verdict(run).label == FEW_ITERATIONS
