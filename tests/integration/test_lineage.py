"""Lineage in MLflow: each iteration's validated tasks become a dataset input of the run (with a
digest that changes with the data), and system metrics are sampled into the run."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import pyarrow as pa

from azr.pipeline.atomic_io import write_parquet_atomic
from azr.config.loading import build_config
from azr.pipeline.run_dir import open_run_dir
from azr.pipeline.schemas import VALIDATED_SCHEMA
from azr.pipeline.mlflow_run import Tracker


def _validated(path: Path, programs: list[str]) -> None:
    rows = [{"step": 1, "group": "deduction_propose", "task_type": "deduction", "index": i, "format_ok": True, "valid": True,
             "reason": "", "detail": "", "program": p, "input": "1", "output": "2", "inputs": None, "outputs": None,
             "message": None, "imports": []} for i, p in enumerate(programs)]
    rows.append({**rows[0], "index": len(rows), "valid": False, "program": None, "reason": "no_def"})
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=VALIDATED_SCHEMA), path)


def test_validated_tasks_are_a_dataset_input_and_system_metrics_are_logged(tmp_path: Path) -> None:
    config = build_config("tiny", overrides=["tracking.system_metrics_interval_s=0.5"])
    run, config = open_run_dir(tmp_path / "runs" / "lineage", config, resume=False)
    tracker = Tracker(run, config)
    tracker.start()
    _validated(run.stage_path(1, "validated.parquet"), ["def f(a):\n    return a + 1"])
    _validated(run.stage_path(2, "validated.parquet"), ["def f(a):\n    return a + 1", "def f(a):\n    return a * 2"])
    first, second = tracker.log_validated_tasks(1), tracker.log_validated_tasks(2)
    assert first and second and first != second
    assert tracker.log_validated_tasks(3) is None  # no stage file: nothing logged
    deadline = time.monotonic() + 30
    client = mlflow.MlflowClient(tracker.tracking_uri)
    while time.monotonic() < deadline and "system/cpu_utilization_percentage" not in client.get_run(tracker.run_id).data.metrics:
        time.sleep(0.5)
    tracker.finish("FINISHED")
    logged = client.get_run(tracker.run_id)
    inputs = {d.dataset.name: d for d in logged.inputs.dataset_inputs}
    assert set(inputs) == {"azr-tasks-000001", "azr-tasks-000002"}
    assert inputs["azr-tasks-000002"].dataset.digest == second
    tags = {t.key: t.value for t in inputs["azr-tasks-000001"].tags}
    assert tags["mlflow.data.context"] == "training" and tags["azr.iteration"] == "1"
    assert "000001/validated.parquet" in inputs["azr-tasks-000001"].dataset.source
    assert '"num_rows": 1' in inputs["azr-tasks-000001"].dataset.profile  # the valid tasks only
    metrics = logged.data.metrics
    assert "system/cpu_utilization_percentage" in metrics and "system/system_memory_usage_megabytes" in metrics


def test_logging_the_tasks_prints_no_mlflow_hints(tmp_path: Path) -> None:
    """MLflow's integer-column UserWarning (raised while the dataset entity is built) is not shown."""
    import warnings

    config = build_config("tiny", overrides=["tracking.system_metrics=false"])
    run, config = open_run_dir(tmp_path / "runs" / "quiet", config, resume=False)
    tracker = Tracker(run, config)
    tracker.start()
    try:
        _validated(run.stage_path(1, "validated.parquet"), ["def f(a):\n    return a + 1"])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert tracker.log_validated_tasks(1)
        assert not [w for w in caught if issubclass(w.category, UserWarning)], [str(w.message) for w in caught]
    finally:
        tracker.finish("FINISHED")
