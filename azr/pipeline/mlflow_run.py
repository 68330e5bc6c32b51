"""MLflow tracking of a training run: one MLflow run per training run, continued on resume.

Uses `MlflowClient` with an explicit run id (no global active run), so resuming, nested
evaluation runs and Prefect's threads all see the same run. Metrics go in batches.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from azr.config.schema import AZRConfig
from azr.pipeline.registry import StageFile
from azr.pipeline.run_dir import RunDir, default_tracking

_MAX_PARAM_CHARS = 6000
_BATCH = 900  # MLflow accepts up to 1000 metrics per log_batch call
UI_URL_ENV = "AZR_MLFLOW_UI_URL"
UI_STATE_FILE = "mlflow-ui.url"  # written by infra/start-mlflow-ui.sh: its address, then its store
# Logged again under `Headline/`: MLflow's run page orders its chart sections by name, and the
# capital H sorts before every lowercase section (abduction_propose/, buffer/, ...), so these
# three charts come first (checked in headless Chromium against MLflow 3.17).
HEADLINE_METRICS = {
    "overall/reward_mean": "Headline/reward",
    "overall/valid_rate": "Headline/valid_proposal_rate",
    "overall/solve_accuracy": "Headline/solve_accuracy",
}
# Marks the experiment as model training (not GenAI) where MLflow reads the kind.
_EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def recorded_ui_url(tracking_uri: str) -> str | None:
    """The MLflow UI address infra/start-mlflow-ui.sh recorded, if it serves `tracking_uri`."""
    state = Path(os.environ.get("AZR_STATE_DIR", ".azr-state")) / UI_STATE_FILE
    try:
        url, store = (state.read_text(encoding="utf-8").split() + ["", ""])[:2]
    except OSError:
        return None
    return url if url and store == tracking_uri else None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    tags = {"azr.python": platform.python_version()}
    for package in ("azr", "torch", "transformers", "accelerate", "prefect", "mlflow"):
        try:
            tags[f"azr.version.{package}"] = version(package)
        except PackageNotFoundError:
            continue
    return tags


class Tracker:
    """The MLflow side of one training run."""

    def __init__(self, run: RunDir, config: AZRConfig) -> None:
        import mlflow

        self.run = run
        self.config = config
        info = run.read_info()
        default_uri, artifacts = default_tracking(run)
        self.tracking_uri = info.get("tracking_uri") or config.tracking.tracking_uri or default_uri
        self.experiment_name = info.get("experiment") or config.tracking.experiment or f"azr-{config.name}"
        self.client = mlflow.MlflowClient(self.tracking_uri)
        self.run_id: str = info.get("mlflow_run_id", "")
        self.experiment_id: str = ""
        self._artifact_root = artifacts if self.tracking_uri == default_uri else None
        self._system_metrics: Any = None

    def _experiment_id(self) -> str:
        existing = self.client.get_experiment_by_name(self.experiment_name)
        if existing is not None:
            if _EXPERIMENT_KIND[0] not in existing.tags:
                self.client.set_experiment_tag(existing.experiment_id, *_EXPERIMENT_KIND)
            return existing.experiment_id
        location = None
        if self._artifact_root is not None:  # a SQLite store would otherwise use ./mlruns
            location = (self._artifact_root / self.experiment_name).resolve().as_uri()
        return self.client.create_experiment(self.experiment_name, artifact_location=location,
                                             tags={_EXPERIMENT_KIND[0]: _EXPERIMENT_KIND[1]})

    def start(self, tags: dict[str, str] | None = None) -> str:
        """Create the MLflow run, or reopen the one this run directory already has; then start
        sampling system metrics into it."""
        run_id = self._open(tags)
        self.start_system_metrics()
        return run_id

    def _open(self, tags: dict[str, str] | None = None) -> str:
        from mlflow.entities import Param, RunTag

        if self.run_id:
            self.client.update_run(self.run_id, status="RUNNING")
            self.client.set_tag(self.run_id, "azr.resumed", "true")
            self.experiment_id = self.client.get_run(self.run_id).info.experiment_id
            for key, value in (tags or {}).items():
                self.client.set_tag(self.run_id, key, value)
            return self.run_id
        self.experiment_id = self._experiment_id()
        run = self.client.create_run(self.experiment_id, run_name=self.run.root.name,
                                     tags={"azr.run_dir": str(self.run.root.resolve()), **_versions(), **(tags or {})})
        self.run_id = run.info.run_id
        params = [Param(key, json.dumps(value) if not isinstance(value, str) else value)
                  for key, value in self.config.flatten().items()]
        for start in range(0, len(params), 100):
            chunk = [Param(p.key, p.value[:_MAX_PARAM_CHARS]) for p in params[start : start + 100]]
            self.client.log_batch(self.run_id, params=chunk)
        sandbox = {f"azr.sandbox.{k}": str(v) for k, v in self.config.sandbox.model_dump().items()}
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in sandbox.items()])
        self.run.write_info({"mlflow_run_id": self.run_id, "tracking_uri": self.tracking_uri,
                             "experiment": self.experiment_name})
        self.log_config()
        return self.run_id

    def log_metrics(self, step: int, metrics: dict[str, float], *, once: bool = False) -> None:
        """Log `metrics` at `step` in batches. With `once`, a batch already in the run (a run
        killed after it was logged, then resumed) is not logged again: each batch is one
        transaction in MLflow's SQL store, so its first key at `step` says whether it is there."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        named = {**metrics, **{plain: metrics[key] for key, plain in HEADLINE_METRICS.items() if key in metrics}}
        entries = [Metric(_metric_key(k), float(v), now, step) for k, v in sorted(named.items())]
        for start in range(0, len(entries), _BATCH):
            batch = entries[start : start + _BATCH]
            if once and self.has_metric(batch[0].key, step):
                continue
            self.client.log_batch(self.run_id, metrics=batch)

    def has_metric(self, key: str, step: int) -> bool:
        """Whether the run has a value of `key` at `step`."""
        return any(m.step == step for m in self.client.get_metric_history(self.run_id, key))

    def log_config(self, since_step: int | None = None) -> None:
        """The run's config.yaml as an artifact (again after a resume changed it). MLflow params
        cannot change: after a `--force` change each changed setting gets a tag
        `azr.changed.KEY` = "OLD -> NEW (from iteration N)", so the run's page tells the truth."""
        self.client.log_text(self.run_id, self.run.config_path.read_text(encoding="utf-8"), "config.yaml")
        if since_step is None:
            return
        from mlflow.entities import RunTag

        logged = self.client.get_run(self.run_id).data.params
        tags = []
        for key, value in self.config.flatten().items():
            text = (json.dumps(value) if not isinstance(value, str) else value)[:_MAX_PARAM_CHARS]
            if key in logged and logged[key] != text:
                tags.append(RunTag(f"azr.changed.{key}", f"{logged[key]} -> {text} (from iteration {since_step})"[:5000]))
        for start in range(0, len(tags), 100):
            self.client.log_batch(self.run_id, tags=tags[start:start + 100])

    def log_validated_tasks(self, step: int) -> str | None:
        """The iteration's valid, buffered tasks as an MLflow dataset input (context `training`,
        named `azr-tasks-NNNNNN`, with its digest), so a checkpoint traces back to the self-made
        data that trained it. Returns the digest (None when the iteration made no valid task)."""
        import warnings

        import mlflow.data
        import pandas as pd
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        path = self.run.stage_path(step, StageFile.VALIDATED)
        if not path.exists():
            return None
        frame = pd.read_parquet(path)
        frame = frame[frame["valid"]].drop(columns=["detail", "reason"], errors="ignore").reset_index(drop=True)
        if frame.empty:
            return None
        for column in ("inputs", "outputs", "imports"):  # lists -> JSON text: a stable digest and schema
            frame[column] = frame[column].map(lambda v: None if v is None else json.dumps(list(v)))
        # MLflow's hints about the source kind and integer columns (the schema is inferred when the
        # entity is built, not in from_pandas) and pandas' deprecation notes from its digest code.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            dataset = mlflow.data.from_pandas(frame, source=path.resolve().as_uri(), name=f"azr-tasks-{step:06d}")
            entity = dataset._to_mlflow_entity()
        tags = [InputTag(MLFLOW_DATASET_CONTEXT, "training"), InputTag("azr.iteration", str(step))]
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(entity, tags=tags)])
        return dataset.digest

    def start_system_metrics(self) -> None:
        """CPU, memory, disk, network and (with NVIDIA's NVML bindings) GPU figures, sampled by
        MLflow's own monitor in a thread every `tracking.system_metrics_interval_s` seconds, as
        `system/...` metrics of this run; a resumed run continues their step count."""
        if not self.config.tracking.system_metrics or not self.run_id or self._system_metrics is not None:
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._system_metrics = SystemMetricsMonitor(
            self.run_id, sampling_interval=self.config.tracking.system_metrics_interval_s,
            resume_logging=bool(self.run.read_info().get("system_metrics_started")), tracking_uri=self.tracking_uri,
        )
        self._system_metrics.start()
        self.run.write_info({**self.run.read_info(), "system_metrics_started": True})

    def stop_system_metrics(self) -> None:
        if self._system_metrics is not None:
            self._system_metrics.finish()
            self._system_metrics = None

    def log_findings(self, step: int, findings: list[dict[str, Any]]) -> None:
        """The detectors that fired at an iteration, as a JSON artifact beside its files."""
        if findings:
            self.client.log_dict(self.run_id, findings, f"iterations/{step:06d}/monitor_findings.json")

    def log_iteration_files(self, step: int, sample_rows: int, with_parquet: bool) -> None:
        """Sample rows of each stage file as JSON (always) and the Parquet files (every k-th)."""
        import pandas as pd

        directory = self.run.iteration_dir(step)
        target = f"iterations/{step:06d}"
        for path in sorted(directory.glob("*.parquet")):
            if sample_rows:
                frame = pd.read_parquet(path).head(sample_rows)
                text = frame.to_json(orient="records", lines=True, default_handler=str)
                self.client.log_text(self.run_id, text, f"{target}/samples/{path.stem}.jsonl")
            if with_parquet:
                self.client.log_artifact(self.run_id, str(path), target)
        for name in (StageFile.UPDATE, "metrics.json", "timings.json"):
            if (directory / name).exists():
                self.client.log_artifact(self.run_id, str(directory / name), target)

    def log_checkpoint(self, path: Path, step: int | None = None) -> str:
        """The checkpoint of `step` (default: from its name, step-NNNNNNNN) as a logged model of the run, once: a model this run already
        logged for the step is kept (and linked to the run if a kill came before the link); one
        left unfinished by a kill is deleted and logged again. Then drop the run's models beyond
        `tracking.keep_logged_models` (azr/pipeline/model_retention.py); a disk about to fill is warned of."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus

        from azr.ops.disk_use import directory_bytes, warn_if_short
        from azr.engine.training.checkpoints import EXPORT_DIR, log_checkpoint_to_mlflow
        from azr.pipeline.model_retention import prune_logged_models

        step = int(Path(path).name.removeprefix("step-")) if step is None else step
        experiment = self.experiment_id or self.client.get_run(self.run_id).info.experiment_id
        found = self.client.search_logged_models(
            [experiment], filter_string=f"source_run_id = '{self.run_id}' AND params.step = '{step}'")
        for model in found:
            if model.status != LoggedModelStatus.READY:
                self.client.delete_logged_model(model.model_id)
                continue
            outputs = self.client.get_run(self.run_id).outputs
            if not any(o.model_id == model.model_id for o in (outputs.model_outputs if outputs else [])):
                self.client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, step)])
            return model.model_id
        if self._artifact_root is not None:
            warn_if_short(self._artifact_root, directory_bytes(Path(path) / EXPORT_DIR), "logging the checkpoint to MLflow")
        model_id = log_checkpoint_to_mlflow(path, run_id=self.run_id, tracking_uri=self.tracking_uri)
        prune_logged_models(self.client, experiment, self.run_id, self.config.tracking.keep_logged_models)
        return model_id

    def finish(self, status: str) -> None:
        """FINISHED, FAILED or KILLED: a crash must not look like a finished run."""
        self.stop_system_metrics()
        if self.run_id:
            self.client.set_terminated(self.run_id, status=status)

    def describe_run(self, prefect_url: str | None = None) -> None:
        """The run page's description (markdown): what ran, where its files are, its Prefect run."""
        config = self.config
        lines = [
            f"**{self.run.root.name}**: preset `{config.name}`, model `{config.model.name_or_path}`, "
            f"{config.trainer.iterations} iterations of {config.rollout.batch_size} sequences per group "
            f"({', '.join(t.value for t in config.tasks.types)}).",
            "",
            f"Run directory: `{self.run.root.resolve()}`",
            "",
            "Headline metrics (the first chart section, `Headline`): `reward` (mean over all sequences), "
            "`valid_proposal_rate`, `solve_accuracy`.",
        ]
        if prefect_url:
            lines += ["", f"Prefect flow run: [{prefect_url}]({prefect_url})"]
        self.client.set_tag(self.run_id, "mlflow.note.content", "\n".join(lines))

    def ui_url(self) -> str | None:
        """The MLflow UI address for this store: the setting, $AZR_MLFLOW_UI_URL, the address
        infra/start-mlflow-ui.sh recorded, or the tracking server itself."""
        configured = self.config.tracking.ui_url or os.environ.get(UI_URL_ENV)
        if configured:
            return configured.rstrip("/")
        recorded = recorded_ui_url(self.tracking_uri)
        if recorded:
            return recorded.rstrip("/")
        return self.tracking_uri.rstrip("/") if self.tracking_uri.startswith(("http://", "https://")) else None

    def run_url(self) -> str | None:
        """The MLflow run page, when a UI address is known."""
        base = self.ui_url()
        if base is None or not self.run_id:
            return None
        return f"{base}/#/experiments/{self.experiment_id}/runs/{self.run_id}"

    def ui_command(self) -> str:
        store = self.tracking_uri
        if store.startswith("sqlite:"):
            return f"mlflow ui --backend-store-uri {store} --host 127.0.0.1 --workers 1"
        return f"open {store} (run {self.run_id})"

    def describe(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "experiment": self.experiment_name, "run_id": self.run_id}


def _metric_key(key: str) -> str:
    """MLflow names allow letters, digits, _ - . / and spaces."""
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in key)
