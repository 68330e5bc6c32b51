"""The MLflow run of an evaluation.

Evaluating a training run's checkpoint logs a child run nested under that training run (same
experiment, tag `mlflow.parentRunId`), so its numbers sit beside the run they judge. Any other
model gets a run in the experiment `azr-eval`, in the store of `--tracking-uri` or, by default, a
SQLite file in the output directory. A SQLite store gets an explicit artifact folder beside the
database, because MLflow would otherwise put artifacts under the current directory.

The client API is used (no `mlflow.start_run`), so logging never touches an active run of the
calling process, such as a training run evaluating itself.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azr.eval.targets import RunInfo

EVAL_EXPERIMENT = "azr-eval"
PARENT_TAG = "mlflow.parentRunId"
_PARAM_CHARS = 6000


@dataclass(frozen=True)
class TrackingTarget:
    tracking_uri: str
    experiment: str  # used when there is no parent run
    parent_run_id: str | None = None
    artifact_location: str | None = None  # for a new experiment in a SQLite store


def sqlite_artifact_location(tracking_uri: str) -> str | None:
    """`<db folder>/mlartifacts` as a file URI for a SQLite store; None for other stores."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    if not database.is_absolute():  # sqlite:///relative.db
        database = Path.cwd() / database
    return (database.parent / "mlartifacts").as_uri()


def standalone_tracking(tracking_uri: str | None, out_dir: Path) -> TrackingTarget:
    if tracking_uri is None:
        out_dir.mkdir(parents=True, exist_ok=True)
        tracking_uri = f"sqlite:///{(out_dir / 'mlflow.db').resolve()}"
    return TrackingTarget(tracking_uri, EVAL_EXPERIMENT, None, sqlite_artifact_location(tracking_uri))


def nested_tracking(info: RunInfo) -> TrackingTarget:
    return TrackingTarget(info.tracking_uri, info.experiment, info.mlflow_run_id, sqlite_artifact_location(info.tracking_uri))


def parent_tracking(tracking_uri: str, parent_run_id: str) -> TrackingTarget:
    """A child of an existing run (a suite's run) in the store `tracking_uri`."""
    return TrackingTarget(tracking_uri, EVAL_EXPERIMENT, parent_run_id, sqlite_artifact_location(tracking_uri))


def _experiment_id(client: Any, target: TrackingTarget) -> str:
    experiment = client.get_experiment_by_name(target.experiment)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(target.experiment, artifact_location=target.artifact_location)


def log_evaluation(
    target: TrackingTarget,
    *,
    run_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    artifacts: Sequence[Path],
    step: int = 0,
) -> str:
    """Create the evaluation's run, log everything in one batch plus the files; its id."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(tracking_uri=target.tracking_uri)
    run_tags = dict(tags)
    if target.parent_run_id is not None:
        parent = client.get_run(target.parent_run_id)
        experiment_id = parent.info.experiment_id
        run_tags[PARENT_TAG] = target.parent_run_id
    else:
        experiment_id = _experiment_id(client, target)
    run = client.create_run(experiment_id, run_name=run_name, tags=run_tags)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    try:
        client.log_batch(
            run_id,
            metrics=[Metric(key, float(value), now, step) for key, value in metrics.items()],
            params=[Param(key, str(value)[:_PARAM_CHARS]) for key, value in params.items()],
            tags=[RunTag("azr.kind", "evaluation")],
        )
        for path in artifacts:
            client.log_artifact(run_id, str(path))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id
