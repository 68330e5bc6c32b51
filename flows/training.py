"""A training run as a Prefect flow: iterations, evaluation when due, checkpoints, tracking.

The run configuration is a flow parameter (`config`, rendered as a form in the Prefect UI), or
a preset with `section.key=value` overrides. A deployment runs it on a worker; `azr train`
runs it directly. The flow-run process is the controller: it holds no model; the engine (the
model's process group, `azr.engine.client`) is started once and stays resident for the whole
flow run.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.events import emit_event
from prefect.runtime import flow_run

from azr.config import AZRConfig
from azr.config_loader import build_config
from azr.engine.policy import set_policy
from azr.pipeline.metrics import summary_rows
from azr.pipeline.resources import get_event_hook, get_resources, set_resources
from azr.pipeline.run_dir import open_run_dir
from azr.pipeline.stages import checkpoint_due
from azr.pipeline.training import (close_resources, evaluate_if_due, finish_iteration, iteration_findings, next_step,
                                   open_resources, run_verdict)
from azr.tracking import Tracker
from flows.iteration import iteration_flow
from flows.monitoring import emit_findings
from tasks.seeding import seed_buffers


def resolve_run_config(preset: str | None, overrides: list[str], config: AZRConfig | None, iterations: int | None) -> AZRConfig | None:
    """The config a run asks for: an explicit one, else the preset with overrides."""
    if config is None and preset is None:
        return None
    resolved = config if config is not None else build_config(preset, overrides=overrides)
    if config is not None and overrides:
        resolved = build_config(None, overrides=overrides, base=config)
    if iterations is not None:
        resolved = resolved.model_copy(update={"trainer": resolved.trainer.model_copy(update={"iterations": iterations})})
    return resolved


def default_run_dir(config: AZRConfig) -> Path:
    return Path("runs") / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"


@task(name="evaluate", cache_policy=NO_CACHE, persist_result=False)
def evaluate_task(step: int) -> dict[str, float]:
    """The configured benchmarks on the current policy, when `trainer.eval_every` is due."""
    res = get_resources()
    return evaluate_if_due(res, step, res.extra.get("tracker"))


def _gpu_hold(count: int):  # noqa: ANN202 - a context manager
    try:
        from flows.gpu import hold_gpus
    except ModuleNotFoundError:
        import contextlib

        return contextlib.nullcontext()
    return hold_gpus(count)


@flow(name="azr-train", persist_result=False, log_prints=False)
def train_flow(
    preset: str | None = "cpu",
    overrides: list[str] | None = None,
    config: AZRConfig | None = None,
    iterations: int | None = None,
    run_dir: str | None = None,
    resume: bool = False,
    force: bool = False,
) -> dict:
    """Run (or, with `resume`, continue) AZR self-play for `trainer.iterations` iterations."""
    logger = get_run_logger()
    wanted = resolve_run_config(preset, overrides or [], config, iterations)
    if wanted is None and not resume:
        raise ValueError("train_flow needs a preset or a config")
    root = Path(run_dir) if run_dir else default_run_dir(wanted)
    run, run_config = open_run_dir(root, wanted, resume=resume, force=force)
    if resume and iterations is not None and run_config.trainer.iterations != iterations:
        run_config = run_config.model_copy(update={"trainer": run_config.trainer.model_copy(update={"iterations": iterations})})
        run.write_config(run_config)
    tracker = Tracker(run, run_config)
    tracker.start(tags={"azr.prefect.flow_run_id": str(flow_run.id or ""),
                        "azr.engine.world_size": str(run_config.trainer.world_size()),
                        "azr.engine.strategy": run_config.trainer.strategy})
    create_markdown_artifact(
        f"MLflow run `{tracker.run_id}` in experiment `{tracker.experiment_name}` (`{tracker.tracking_uri}`).\n\n"
        f"Open it with: `{tracker.ui_command()}`\n\nRun directory: `{run.root.resolve()}`",
        key="azr-mlflow-run", description="Where this training run is tracked",
    )
    if tracker.tracking_uri.startswith(("http://", "https://")):
        experiment = tracker.client.get_run(tracker.run_id).info.experiment_id
        create_link_artifact(f"{tracker.tracking_uri.rstrip('/')}/#/experiments/{experiment}/runs/{tracker.run_id}",
                             link_text="MLflow run", key="azr-mlflow-link")
    status = "FAILED"
    res = None
    try:
        with _gpu_hold(run_config.trainer.gpus):
            res = open_resources(run, run_config, on_event=get_event_hook())
            res.extra["tracker"] = tracker
            set_resources(res)
            set_policy(res.policy)
            seed_buffers()  # the seeding stage before iteration 1 (a no-op when seeded or given seed files)
            first, last = next_step(run), run_config.trainer.iterations
            progress = create_progress_artifact(100.0 * (first - 1) / last, key="azr-train-progress",
                                                description=f"iterations of {run.root.name}")
            for step in range(first, last + 1):
                res.emit("iteration_started", step=step, last=last)
                iteration_flow(step)
                metrics = finish_iteration(res, step, tracker)
                findings = iteration_findings(res, step)
                emit_findings(run.root, findings)
                metrics.update(evaluate_task(step))
                rows = summary_rows(metrics)
                create_table_artifact(rows, key="azr-iteration", description=f"iteration {step} of {run.root.name}")
                update_progress_artifact(progress, 100.0 * step / last)
                if checkpoint_due(run_config, step, last):
                    emit_event("azr.checkpoint.completed", resource={"prefect.resource.id": f"azr.run.{run.root.name}"},
                               payload={"run_dir": str(run.root.resolve()), "step": step})
                res.emit("iteration_finished", step=step, last=last, metrics=metrics, rows=rows, findings=findings)
                logger.info("iteration %d/%d done", step, last)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.finish(status)
        if res is not None:
            close_resources(res)
        set_resources(None)
        set_policy(None)
    verdict = run_verdict(run, run_config.trainer.iterations)
    logger.info(verdict)
    return {"run_dir": str(run.root.resolve()), "iterations": run_config.trainer.iterations, "verdict": verdict,
            **tracker.describe()}
