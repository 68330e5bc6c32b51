"""A training run as a Prefect flow: iterations, evaluation when due, checkpoints, tracking.

The parameters are a preset (a dropdown in the Prefect UI) plus `changes` to it (a form whose
empty fields keep the preset's values), exactly `-p` and `-s` of `azr train`; a full `config` is
an advanced alternative to the preset. A deployment runs it on a worker; `azr train` runs it
directly. The flow-run process is the controller: it holds no model; the engine (the model's
process group, `azr.engine.controller.client`) is started once and stays resident for the whole flow run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.exceptions import TerminationSignal
from prefect.runtime import flow_run
from pydantic import Field

from azr.config.schema import AZRConfig
from azr.config.loading import ConfigError, build_config
from azr.pipeline.context import RunContext, get_event_hook
from azr.pipeline.run_dir import RunDir, config_differences, open_run_dir
from azr.pipeline.stages import checkpoint_due, finish_updates, update_done
from azr.pipeline.run import (
    check_iterations,
    close_resources,
    evaluate_if_due,
    evaluation_due,
    finish_iteration,
    iteration_findings,
    mark_published,
    next_step,
    open_resources,
    post_commit_pending,
    run_verdict,
)
from azr.config.run_form import ConfigChanges, Preset, changed_values, preset_help
from azr.pipeline.mlflow_run import Tracker
from flows.cancellation import watch_for_cancellation
from flows.gpu import gpus_to_hold, hold_gpus
from flows.iteration import iteration_flow
from flows.monitoring import emit_findings, event_id
from flows.run_pages import artifact_key, name_flow_run, publish_iteration, publish_tracking_links
from flows.run_slot import hold_run_slot
from flows.server_lifetime import bind_temporary_server
from tasks.seeding import seed_buffers


def resolve_run_config(
    preset: str | None,
    overrides: list[str],
    config: AZRConfig | None,
    iterations: int | None,
    changes: dict[str, Any] | None = None,
    stored: AZRConfig | None = None,
) -> AZRConfig | None:
    """The config a run asks for: the preset with `changes` then `overrides`, or exactly `config`.

    A full `config` never silently replaces a chosen preset: giving both is an error. On resume
    (`stored`: the run's own config) the changes apply to the stored config and the preset is
    not used; with nothing to change the stored config stays (None).
    """
    if stored is not None:
        if config is None and not changes and not overrides and iterations is None:
            return None
        preset, config = None, config or stored
    if config is not None and preset is not None:
        raise ConfigError(
            f"both a preset ({preset!s}) and a full `config` were given, and one would silently replace the "
            "other: clear `config` to run the preset with `changes`, or clear `preset` to run exactly `config`"
        )
    if config is None and preset is None:
        return None
    resolved = build_config(None if config is not None else str(preset), overrides=overrides, base=config,
                            changes=changed_values(changes))
    if iterations is not None:
        resolved = resolved.model_copy(update={"trainer": resolved.trainer.model_copy(update={"iterations": iterations})})
    return resolved


def default_run_dir(config: AZRConfig) -> Path:
    return Path("runs") / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"


@task(name="probe", cache_policy=NO_CACHE, persist_result=False)
def probe_task(res: RunContext, step: int, current: bool = True) -> dict[str, float]:
    """The frozen probe set, greedily, when `trainer.probe_every` is due (step 0: before training)."""
    from azr.pipeline.probe_run import probe_if_due

    return probe_if_due(res, step, res.tracker, current=current)


@task(name="evaluate", cache_policy=NO_CACHE, persist_result=False)
def evaluate_task(res: RunContext, step: int) -> dict[str, float]:
    """The configured benchmarks on the current policy, when `trainer.eval_every` is due."""
    return evaluate_if_due(res, step, res.tracker)


@flow(name="azr-train", persist_result=False, log_prints=False)
def train_flow(
    preset: Preset | None = Field(
        Preset.cpu, json_schema_extra={"title": "Preset"},
        description="The recipe to start from; `changes` adjust it. Not used on resume. " + preset_help() + ".",
    ),
    changes: ConfigChanges = Field(
        {}, json_schema_extra={"title": "Changes to the preset"},
        description="Settings that differ from the preset, as `-s section.key=value` does on the command line; "
        "every empty field keeps the preset's value. On resume they apply to the run's own settings (with `force`).",
    ),
    overrides: list[str] | None = Field(
        None, json_schema_extra={"title": "Changes as text"},
        description='More changes as "section.key=value" strings (values are YAML, e.g. trainer.iterations=2), '
        "applied after `changes`: the command line's -s.",
    ),
    config: AZRConfig | None = Field(
        None, json_schema_extra={"title": "Full configuration (advanced)"},
        description="Every setting, instead of a preset: clear `preset` to use it (giving both is refused). "
        "Its form starts from the class defaults (the paper's recipe), not from a preset.",
    ),
    iterations: int | None = Field(
        None, ge=1, json_schema_extra={"title": "Iterations"},
        description="Total self-play iterations of the run (trainer.iterations); empty: the preset's (cpu: 3, paper: 500).",
    ),
    extend_by: int | None = Field(
        None, ge=1, json_schema_extra={"title": "Extend by (iterations)"},
        description="With `resume`: train this many iterations beyond those already done (counted once the run is "
        "free); empty: up to `iterations`.",
    ),
    run_dir: str | None = Field(
        None, json_schema_extra={"title": "Run directory"},
        description="Where the run's files go (on the worker, relative to the project); empty: runs/PRESET-TIME. "
        "Needed with `resume`.",
    ),
    resume: bool = Field(
        False, json_schema_extra={"title": "Resume"},
        description="Continue the run in `run_dir` from its last complete stage, with its own settings (as "
        "`azr train --resume`).",
    ),
    force: bool = Field(
        False, json_schema_extra={"title": "Force"},
        description="On resume, accept settings that differ from the run's own (they are written to its config.yaml).",
    ),
) -> dict:
    """Run (or, with `resume`, continue) AZR self-play for `trainer.iterations` iterations."""
    logger = get_run_logger()
    bind_temporary_server()  # a no-op behind a real Prefect server
    if resume and not run_dir:
        raise ConfigError("resume needs `run_dir`: the directory of the run to continue")
    if force and not resume:
        raise ConfigError("`force` only applies with `resume` (it accepts settings that differ from the resumed run's)")
    stored_run = RunDir(Path(run_dir)) if resume and run_dir else None
    stored = stored_run.read_config() if stored_run is not None and stored_run.config_path.is_file() else None
    wanted = resolve_run_config(preset, overrides or [], config, iterations, changes, stored)
    if wanted is None and not resume:
        raise ConfigError("choose a `preset` (or clear it and give a full `config`)")
    root = Path(run_dir) if run_dir else default_run_dir(wanted)
    name_flow_run(root.name)
    with hold_run_slot(root), watch_for_cancellation(UUID(flow_run.id) if flow_run.id else None):
        if extend_by is not None:
            if not resume:
                raise ConfigError("`extend_by` continues an existing run: set `resume` and `run_dir` too")
            done = next_step(RunDir(root)) - 1
            iterations = done + extend_by
            wanted = (wanted or stored).model_copy(update={"trainer": (wanted or stored).trainer.model_copy(update={"iterations": iterations})})
            logger.info("extending %s by %d iterations: %d done, training up to %d", root.name, extend_by, done, iterations)
        return _train(root, wanted, resume, force, iterations)


def _train(root: Path, wanted: AZRConfig | None, resume: bool, force: bool, iterations: int | None) -> dict:
    logger = get_run_logger()
    run, run_config = open_run_dir(root, wanted, resume=resume, force=force)
    if resume and iterations is not None and run_config.trainer.iterations != iterations:
        run_config = run_config.model_copy(update={"trainer": run_config.trainer.model_copy(update={"iterations": iterations})})
    stored = run.read_config() if resume else run_config
    done = check_iterations(run, run_config.trainer.iterations)
    tracker = Tracker(run, run_config)
    tracker.start(tags={"azr.prefect.flow_run_id": str(flow_run.id or ""),
                        "azr.engine.world_size": str(run_config.trainer.world_size()),
                        "azr.engine.strategy": run_config.trainer.strategy})
    publish_tracking_links(run, tracker)
    status = "FAILED"
    res = None
    try:
        with hold_gpus(gpus_to_hold(run_config)):
            res = open_resources(run, run_config, on_event=get_event_hook())
            if run_config != stored:  # the run has really started with the new settings: keep them
                run.write_config(run_config)
                tracker.log_config(since_step=next_step(run))
                logger.info("%s continues with changed settings: %s", run.root.name,
                            "; ".join(config_differences(stored, run_config)) or
                            f"trainer.iterations: {stored.trainer.iterations} -> {run_config.trainer.iterations}")
            res.tracker = tracker
            seed_buffers(res)  # the seeding stage before iteration 1 (a no-op when seeded or given seed files)
            first, last = next_step(run), run_config.trainer.iterations
            logger.info("%s: preset %s, model %s, iterations %d-%d of %d, run directory %s", run.root.name,
                        run_config.name, run_config.model.name_or_path, first, last, last, run.root.resolve())
            probe_task(res, 0, current=first == 1)  # the probe before any update (kept from the first start)
            progress = create_progress_artifact(100.0 * (first - 1) / last, key=artifact_key(run, "progress"),
                                                description=f"iterations of {run.root.name}")
            one_step_off = run_config.rollout.async_level == 1
            for step in post_commit_pending(run, run_config, first):  # a kill came after a commit
                if one_step_off and not update_done(run, step):  # its update runs beside the next generation
                    continue
                logger.info("iteration %d of %s was committed before the run stopped: finishing its logging",
                            step, run.root.name)
                _after_commit(res, tracker, step, last, None, started=time.perf_counter(), evaluate=step == first - 1)
            iteration_runs: dict[int, Any] = {}
            for step in range(first, last + 1):
                res.emit("iteration_started", step=step, last=last)
                started = time.perf_counter()
                state = iteration_flow.with_options(flow_run_name=f"iteration-{step} of {run.root.name}")(
                    res, step, return_state=True)
                state.result()  # a failed iteration fails the run
                iteration_runs[step] = state.state_details.flow_run_id
                if not one_step_off:
                    _after_commit(res, tracker, step, last, iteration_runs[step], started=started)
                else:  # iteration step-1 is complete now (its update ran beside this generation)
                    _publish_updated(res, tracker, step, last, iteration_runs)
                update_progress_artifact(progress, 100.0 * step / last)
            if one_step_off:
                finish_update_task(res, last)  # the last iteration's update: no generation beside it
                _publish_updated(res, tracker, last + 1, last, iteration_runs)
        status = "FINISHED"
    except (KeyboardInterrupt, TerminationSignal):  # Ctrl-C, SIGTERM, a cancellation: not a failure
        status = "KILLED"
        raise
    finally:
        tracker.finish(status)
        if res is not None:
            close_resources(res)
    verdict = run_verdict(run, run_config.trainer.iterations)
    logger.info(verdict)
    return {"run_dir": str(run.root.resolve()), "iterations": run_config.trainer.iterations, "verdict": verdict,
            "trained": max(0, run_config.trainer.iterations - done), **tracker.describe()}


@task(name="finish-update", cache_policy=NO_CACHE, persist_result=False, log_prints=False)
def finish_update_task(res: RunContext, last: int) -> None:
    """One-step-off: the last iteration's update, after its commit (no generation follows)."""
    finish_updates(res, last)


def _publish_updated(res: RunContext, tracker: Tracker, step: int, last: int, iteration_runs: dict[int, Any]) -> None:
    """One-step-off: the post-commit work of every iteration before `step` that is complete
    (committed, its update done) and not yet logged; the policy is then that after update
    step-1, so only iteration step-1 can still be evaluated."""
    for done in post_commit_pending(res.run, res.config, step):
        if update_done(res.run, done):
            _after_commit(res, tracker, done, last, iteration_runs.get(done), started=time.perf_counter(),
                          evaluate=done == step - 1)


def _after_commit(res: RunContext, tracker: Tracker, step: int, last: int, iteration_run: Any, *, started: float,
                  evaluate: bool = True) -> None:
    """Everything after an iteration's buffer commit: metrics.json and MLflow (each part once),
    the monitors' events, a due evaluation, the Prefect tables, the checkpoint events. A resume
    runs it again for a committed iteration a kill interrupted, so nothing of it is lost."""
    logger = get_run_logger()
    run, run_config = res.run, res.config
    metrics = finish_iteration(res, step, tracker)
    findings = iteration_findings(res, step)
    emit_findings(run.root, findings)
    if evaluation_due(run_config, step):
        if evaluate or run.stage_path(step, "eval.json").exists():  # done before: only its logging is left
            metrics.update(evaluate_task(res, step))
        else:
            logger.warning("iteration %d: its evaluation was never done and cannot be now (the policy has moved on)", step)
    metrics.update(probe_task(res, step, current=evaluate))
    rows = publish_iteration(run, step, last, metrics, iteration_run)
    if checkpoint_due(run_config, step, last):
        announce_checkpoint(run, run_config, step)
    mark_published(run, step)
    res.emit("iteration_finished", step=step, last=last, metrics=metrics, rows=rows, findings=findings)
    logger.info(
        "iteration %d/%d of %s: reward %.3f, valid proposals %.1f%%, solve accuracy %.1f%% (%.0f s)",
        step, last, run.root.name, metrics.get("overall/reward_mean", float("nan")),
        100 * metrics.get("overall/valid_rate", float("nan")),
        100 * metrics.get("overall/solve_accuracy", float("nan")), time.perf_counter() - started,
    )


def announce_checkpoint(run: RunDir, config: AZRConfig, step: int) -> None:
    """`azr.checkpoint.completed` for every checkpoint, and one `azr.checkpoint.evaluate` per
    benchmark in `eval.on_checkpoint`, carrying the run's eval settings (the azr-eval trigger)."""
    resource = {"prefect.resource.id": f"azr.run.{run.root.name}"}
    emit_event("azr.checkpoint.completed", resource=resource, payload={"run_dir": str(run.root.resolve()), "step": step},
               id=event_id(run.root, "azr.checkpoint.completed", step))
    for benchmark in config.eval.on_checkpoint:
        emit_event("azr.checkpoint.evaluate", resource=resource, id=event_id(run.root, "azr.checkpoint.evaluate", step, benchmark),
                   payload={
            "run_dir": str(run.root.resolve()), "step": step, "benchmark": benchmark,
            "data": config.eval.data_source(benchmark), "limit": config.eval.limit, "prompt": config.eval.prompt,
            "max_new_tokens": config.eval.max_new_tokens,
        })
