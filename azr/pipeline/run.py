"""A training run without Prefect: open or resume it, bring the policy and the buffers to the
state of the last complete stage, finish iterations, close. The Prefect flows call these.

Resume works from the files alone, checked first (run_state.py). The buffer log says which
iterations were committed; the newest intact checkpoint gives the weights, and the updates of
later iterations are replayed from their scored.parquet, so no iteration is lost or applied
twice, and no buffer row is written twice.
"""

from __future__ import annotations

import logging
from typing import Any


from azr.pipeline.atomic_io import atomic_write_json, json_problem
from azr.selfplay.buffer import Buffers
from azr.pipeline.buffer_log import committed_steps, load_buffer_log, write_initial
from azr.config.schema import AZRConfig
from azr.ops.monitors import Finding, detect, known_programs, learning_verdict, metrics_history, monitor_metrics
from azr.pipeline.metrics import iteration_metrics
from azr.pipeline.context import ProgressHook, RunContext
from azr.pipeline.registry import StageFile
from azr.pipeline.run_dir import RunDir, RunDirError
from azr.pipeline.seeding import initial_buffers, seeding_needed
from azr.pipeline.resume import (
    ResumePlan,
    RunStateError,
    committed_iterations,
    plan_resume,
    prepare_resume,
    rebuild_buffers,
    write_committed_records,
)
from azr.pipeline.stages import checkpoint_due, train_on_scored

logger = logging.getLogger(__name__)


def next_step(run: RunDir) -> int:
    """The first iteration whose commit has not happened (by the buffer log or committed.json)."""
    steps = committed_iterations(run)
    return (max(steps) + 1) if steps else 1


def load_buffers(run: RunDir, config: AZRConfig) -> Buffers | None:
    """The run's buffers; None while its seeding stage is still to run (it sets them)."""
    if committed_steps(run.buffer_dir):
        return load_buffer_log(run.buffer_dir, config.buffer)
    if seeding_needed(run, config):
        return None
    buffers = initial_buffers(run, config)  # refuses buffers smaller than a solve batch
    write_initial(buffers, run.buffer_dir)
    return buffers


def restore_policy(policy: Any, run: RunDir, plan: ResumePlan) -> list[int]:
    """Bring the policy to the state after the last update done: load the plan's checkpoint,
    replay the later updates from their scored.parquet, write again the update records and
    checkpoints the plan found lost or damaged.

    Returns the iterations whose updates were replayed.
    """
    if plan.checkpoint is not None:
        try:
            info = policy.load_checkpoint(plan.checkpoint.path)
        except Exception as exc:  # noqa: BLE001 - whatever the loader hit, the message names the checkpoint
            if "size mismatch" in str(exc).lower():  # another model's weights: the config, not the file, is wrong
                raise RunStateError(
                    f"checkpoint {plan.checkpoint.path} holds another model than the run's settings name "
                    f"(model.name_or_path {config_model(run)}): {exc}. Resume with the settings the run was "
                    f"trained with (its config.yaml was changed?), e.g. --set model.name_or_path=... --force"
                ) from exc
            raise RunStateError(
                f"checkpoint {plan.checkpoint.path} passed its checks but does not load ({exc}). Move it out of "
                f"{run.checkpoint_dir} and resume again: the updates after the previous checkpoint are replayed."
            ) from exc
        record = run.stage_path(info.step, StageFile.UPDATE)
        if json_problem(record) is not None and "update" in info.metadata:
            # Killed between the checkpoint and update.json: the checkpoint holds the metrics.
            atomic_write_json(record, info.metadata["update"])
    for step in plan.replay:
        metrics = train_on_scored(policy, run.stage_path(step, StageFile.SCORED), step)
        if step in plan.write_update:
            atomic_write_json(run.stage_path(step, StageFile.UPDATE), metrics)
        if step in plan.resave:
            policy.save_checkpoint(run.checkpoint_dir, step, metadata={"update": metrics})
            logger.warning("wrote checkpoint %d again, from the replayed updates", step)
    return list(plan.replay)


def config_model(run: RunDir) -> str:
    try:
        return run.read_config().model.name_or_path
    except RunDirError:
        return "?"


def open_resources(run: RunDir, config: AZRConfig, *, on_event: ProgressHook | None = None,
                   policy: Any = None, executor: Any = None) -> RunContext:
    """Check the run directory (run_state.py), start the engine (or take a policy: an in-process
    one in unit tests) and the executor, load or rebuild the buffers, restore the policy."""
    from azr.selfplay.iteration_prompts import tokenizer_counter
    from azr.engine.controller.client import EngineClient
    from azr.sandbox import SandboxExecutor
    from azr.selfplay.prompts.chat_format import make_wrapper

    owns_executor, owns_policy = executor is None, policy is None
    plan = plan_resume(run, config)  # a run that cannot be resumed is refused before the model loads
    prepare_resume(run, plan)
    buffers = None if plan.rebuild_buffer_from is not None else load_buffers(run, config)  # an under-seeded run is refused here
    policy = policy or EngineClient.start(config, run.root)  # the engine process group (docs/architecture.md)
    try:
        executor = executor or SandboxExecutor.from_run_config(config)
        wrapper = make_wrapper(config.model.prompt_wrapper, policy.tokenizer, config.tasks.prompt_profile)
        count_tokens = tokenizer_counter(policy.tokenizer)
        if plan.rebuild_buffer_from is not None:
            buffers = rebuild_buffers(run, config, plan, wrapper, count_tokens)
        write_committed_records(run, plan)
        replayed = restore_policy(policy, run, plan)
    except BaseException:
        if owns_policy:
            policy.close()  # a vLLM server must not outlive a run that failed to open
        raise
    if replayed:
        logger.info("replayed the updates of iterations %s from their scored.parquet", replayed)
    return RunContext(
        config=config,
        run=run,
        policy=policy,
        executor=executor,
        buffers=buffers,
        wrapper=wrapper,
        count_tokens=count_tokens,
        on_event=on_event,
        replayed=replayed,
        owns_policy=owns_policy,
        owns_executor=owns_executor,
    )


# The parts of an iteration's logging after its buffer commit, in order; metrics.json lists
# those done ("logged_parts"), and each part is safe to repeat, so a kill anywhere in between
# and a resume log every part once.
LOGGED_PARTS = ("metrics", "findings", "tasks", "files", "checkpoint")


def finish_iteration(res: RunContext, step: int, tracker: Any = None) -> dict[str, float]:
    """Metrics of a committed iteration, written once and logged to MLflow once.

    Also the post-commit step of a resume: a run killed after the commit (before metrics.json,
    or in the middle of the logging) gets here again for that iteration and logs only what is
    missing (metrics.json says which parts are done; MLflow is asked about the rest).
    """
    metrics_path = res.run.stage_path(step, "metrics.json")
    record = _read_metrics_record(res, step)
    if not record:
        metrics, findings = _metrics_and_findings(res, step)
        record = {"metrics": metrics, "findings": [f.as_dict() for f in findings], "logged": False,
                  "logged_parts": [], "published": False}
        atomic_write_json(metrics_path, record)
    if tracker is not None and not record.get("logged"):
        done = record.setdefault("logged_parts", [])
        for part in LOGGED_PARTS:
            if part not in done:
                _log_part(res, step, tracker, record, part)
                done.append(part)
                atomic_write_json(metrics_path, record)
        record["logged"] = True
        atomic_write_json(metrics_path, record)
    return record["metrics"]


def _read_metrics_record(res: RunContext, step: int) -> dict[str, Any]:
    """metrics.json of `step`; empty when missing or unreadable (a damaged one is computed
    again from the stage files, and the logging that follows skips what MLflow already has)."""
    try:
        record = res.run.read_json(step, "metrics.json")
    except (OSError, ValueError) as exc:
        logger.warning("iteration %d: metrics.json is unreadable (%s); computing it again from the stage files", step, exc)
        return {}
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        if record:
            logger.warning("iteration %d: metrics.json has no metrics; computing it again from the stage files", step)
        return {}
    return record


def _log_part(res: RunContext, step: int, tracker: Any, record: dict[str, Any], part: str) -> None:
    """One part of an iteration's MLflow logging; each is idempotent (artifacts are overwritten,
    dataset inputs deduplicated by MLflow, metrics and models looked up first)."""
    config = res.config
    if part == "metrics":
        tracker.log_metrics(step, record["metrics"], once=True)
    elif part == "findings":
        tracker.log_findings(step, record.get("findings", []))
    elif part == "tasks":
        tracker.log_validated_tasks(step)
    elif part == "files":
        every = config.tracking.log_parquet_every
        tracker.log_iteration_files(step, config.tracking.sample_rows, with_parquet=step % every == 0 or step == 1)
    elif part == "checkpoint":
        last_step = res.last_step
        if step % config.tracking.log_checkpoint_every == 0 or step == last_step:
            from azr.engine.training.checkpoints import checkpoint_name, is_complete

            path = res.run.checkpoint_dir / checkpoint_name(step)
            if is_complete(path):
                tracker.log_checkpoint(path, step)
            elif checkpoint_due(config, step, last_step):
                logger.warning("iteration %d: no complete checkpoint %s to log to MLflow", step, path)


def check_iterations(run: RunDir, iterations: int) -> int:
    """Iterations already done; a resume that would end before them is refused (the run keeps
    its config: nothing is rewritten to fewer iterations)."""
    done = next_step(run) - 1
    if iterations < done:
        from azr.config.loading import ConfigError

        raise ConfigError(
            f"{run.root} already has {done} iterations done, so it cannot end at iteration {iterations}: "
            f"resume without --iterations to finish it as configured, or with --iterations above {done} to train further"
        )
    return done


def post_commit_pending(run: RunDir, config: AZRConfig, next_step_: int) -> list[int]:
    """Committed iterations whose post-commit work (metrics.json, MLflow, the flow's
    announcements, a due evaluation) a kill interrupted; a resume does it first."""
    pending = []
    for step in range(1, next_step_):
        try:
            record = run.read_json(step, "metrics.json")
        except (OSError, ValueError):
            record = {}
        if not isinstance(record, dict) or not record.get("logged") or record.get("published") is False:
            pending.append(step)
        elif evaluation_due(config, step) and step == next_step_ - 1 and not _eval_logged(run, step):
            pending.append(step)
    return pending


def _eval_logged(run: RunDir, step: int) -> bool:
    try:
        return bool(run.read_json(step, "eval.json").get("logged"))
    except (OSError, ValueError, AttributeError):
        return False


def mark_published(run: RunDir, step: int) -> None:
    """The flow has announced a finished iteration (events, tables, checkpoint triggers)."""
    record = run.read_json(step, "metrics.json")
    if record.get("published") is False:
        record["published"] = True
        atomic_write_json(run.stage_path(step, "metrics.json"), record)


def _metrics_and_findings(res: RunContext, step: int) -> tuple[dict[str, float], list[Finding]]:
    """The iteration's metrics with the monitors' figures, and the detectors that fired."""
    config = res.config
    metrics = iteration_metrics(res.run, step)
    history = metrics_history(res.run, step - 1)
    if config.monitor.enabled:
        metrics.update(monitor_metrics(res.run, step, metrics, history, config.monitor, known_programs(config)))
    findings = detect([*history, metrics], config)
    metrics.update({f"monitor/alert/{finding.name}": 1.0 for finding in findings})
    return metrics, findings


def iteration_findings(res: RunContext, step: int) -> list[Finding]:
    """What the detectors found at a finished iteration (read back from its metrics.json)."""
    return [Finding(**item) for item in res.run.read_json(step, "metrics.json").get("findings", [])]


def run_verdict(run: RunDir, last_step: int) -> str:
    """Did the run learn: the probe's paired test (azr/eval/learning_verdict.py), then the
    training rates' trend as untested context."""
    from azr.pipeline.probe_run import run_learning_verdict

    return run_learning_verdict(run).line() + "\n" + learning_verdict([m for m in metrics_history(run, last_step) if m])


def evaluation_due(config: AZRConfig, step: int) -> bool:
    """In-training evaluation runs every `trainer.eval_every` iterations when benchmarks are set."""
    return bool(config.eval.benchmarks) and step % config.trainer.eval_every == 0


def evaluate_if_due(res: RunContext, step: int, tracker: Any = None) -> dict[str, float]:
    """Evaluate the policy on the configured benchmarks when `eval_every` says so (once per
    iteration: eval.json marks it done), and log the metrics at the iteration's step."""
    config = res.config
    if not evaluation_due(config, step):
        return {}
    record = res.run.read_json(step, "eval.json")
    if not record:
        from azr.eval.in_training import evaluate_policy

        res.emit("stage_started", step=step, stage="evaluation")
        metrics = evaluate_policy(
            res.policy, config, [(name, config.eval.data_source(name)) for name in config.eval.benchmarks],
            config.eval.limit, res.executor, max_new_tokens=config.eval.max_new_tokens,
            prompt=config.eval.prompt, out_dir=res.run.iteration_dir(step),
        )
        record = {"metrics": metrics, "logged": False}
        atomic_write_json(res.run.stage_path(step, "eval.json"), record)
    if tracker is not None and not record.get("logged"):
        tracker.log_metrics(step, record["metrics"], once=True)
        record["logged"] = True
        atomic_write_json(res.run.stage_path(step, "eval.json"), record)
    return record["metrics"]


def close_resources(res: RunContext) -> None:
    """Stop the sandbox workers and the rollout engine this run started (not those it was handed)."""
    try:
        close = getattr(res.executor, "close", None)
        if close is not None and res.owns_executor:
            close()
    finally:
        if res.owns_policy:
            res.policy.close()
