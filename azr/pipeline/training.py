"""A training run without Prefect: open or resume it, bring the policy and the buffers to the
state of the last complete stage, finish iterations, close. The Prefect flows call these.

Resume works from the files alone. The buffer log says which iterations were committed; the
newest complete checkpoint gives the weights, and the updates of later iterations (whose
update.json exists) are replayed from their scored.parquet, so no iteration is lost or
applied twice, and no buffer row is written twice.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from azr.artifacts import atomic_write_json
from azr.buffer import Buffers, committed_steps
from azr.config import AZRConfig
from azr.monitoring import Finding, detect, known_programs, learning_verdict, metrics_history, monitor_metrics
from azr.pipeline.metrics import iteration_metrics
from azr.pipeline.resources import ProgressHook, Resources
from azr.pipeline.run_dir import RunDir
from azr.pipeline.seeding import initial_buffers, seeding_needed
from azr.pipeline.stages import checkpoint_due, has_trained_rows

logger = logging.getLogger(__name__)


def next_step(run: RunDir) -> int:
    """The first iteration whose buffer commit has not happened."""
    steps = committed_steps(run.buffer_dir)
    return (max(steps) + 1) if steps else 1


def load_buffers(run: RunDir, config: AZRConfig) -> Buffers | None:
    """The run's buffers; None while its seeding stage is still to run (it sets them)."""
    if committed_steps(run.buffer_dir):
        return Buffers.load(run.buffer_dir, config.buffer)
    if seeding_needed(run, config):
        return None
    buffers = initial_buffers(run, config)  # refuses buffers smaller than a solve batch
    buffers.write_initial(run.buffer_dir)
    return buffers


def restore_policy(policy: Any, run: RunDir, upto_step: int) -> list[int]:
    """Bring the policy to the state after the last update done before or at `upto_step`.

    Returns the iterations whose updates were replayed.
    """
    info = policy.resume(run.checkpoint_dir)
    done = 0 if info is None else info.step
    if info is not None and not run.stage_path(info.step, "update.json").exists():
        # Killed between the checkpoint and update.json: the checkpoint holds the metrics.
        atomic_write_json(run.stage_path(info.step, "update.json"), info.metadata.get("update", {}))
    replayed = []
    for step in range(done + 1, upto_step + 1):
        if not run.stage_path(step, "update.json").exists():
            break
        scored = run.stage_path(step, "scored.parquet")
        if has_trained_rows(pd.read_parquet(scored, columns=["trained"])):
            policy.update_scored(scored)
        replayed.append(step)
    return replayed


def open_resources(run: RunDir, config: AZRConfig, *, on_event: ProgressHook | None = None,
                   policy: Any = None, executor: Any = None) -> Resources:
    """Start the engine (or take a policy: an in-process one in unit tests) and the executor,
    load the buffers, restore the policy."""
    from azr.batches import tokenizer_counter
    from azr.engine.client import EngineClient
    from azr.sandbox import SandboxExecutor
    from azr.wrappers import make_wrapper

    owns_executor, owns_policy = executor is None, policy is None
    buffers = load_buffers(run, config)  # first: an under-seeded run is refused before the model loads
    policy = policy or EngineClient.start(config, run.root)  # the engine process group (DESIGN.md)
    try:
        executor = executor or SandboxExecutor.from_run_config(config)
        start = next_step(run)
        replayed = restore_policy(policy, run, start)
    except BaseException:
        if owns_policy:
            policy.close()  # a vLLM server must not outlive a run that failed to open
        raise
    if replayed:
        logger.info("replayed the updates of iterations %s from their scored.parquet", replayed)
    return Resources(
        config=config,
        run=run,
        policy=policy,
        executor=executor,
        buffers=buffers,
        wrapper=make_wrapper(config.model.prompt_wrapper, policy.tokenizer, config.tasks.prompt_profile),
        count_tokens=tokenizer_counter(policy.tokenizer),
        on_event=on_event,
        extra={"last_step": config.trainer.iterations, "replayed": replayed, "owns_executor": owns_executor,
               "owns_policy": owns_policy},
    )


def finish_iteration(res: Resources, step: int, tracker: Any = None) -> dict[str, float]:
    """Metrics of a committed iteration, written once and logged to MLflow once."""
    metrics_path = res.run.stage_path(step, "metrics.json")
    record = res.run.read_json(step, "metrics.json")
    if not record:
        metrics, findings = _metrics_and_findings(res, step)
        record = {"metrics": metrics, "findings": [f.as_dict() for f in findings], "logged": False}
        atomic_write_json(metrics_path, record)
    if tracker is not None and not record.get("logged"):
        tracker.log_metrics(step, record["metrics"])
        tracker.log_findings(step, record.get("findings", []))
        tracker.log_validated_tasks(step)
        every = res.config.tracking.log_parquet_every
        tracker.log_iteration_files(step, res.config.tracking.sample_rows, with_parquet=step % every == 0 or step == 1)
        last_step = int(res.extra.get("last_step", step))
        log_model = step % res.config.tracking.log_checkpoint_every == 0 or step == last_step
        if log_model and checkpoint_due(res.config, step, last_step):
            from azr.engine.checkpoints import latest_checkpoint

            path = latest_checkpoint(res.run.checkpoint_dir)
            if path is not None:
                tracker.log_checkpoint(Path(path))
        record["logged"] = True
        atomic_write_json(metrics_path, record)
    return record["metrics"]


def _metrics_and_findings(res: Resources, step: int) -> tuple[dict[str, float], list[Finding]]:
    """The iteration's metrics with the monitors' figures, and the detectors that fired."""
    config = res.config
    metrics = iteration_metrics(res.run, step)
    history = metrics_history(res.run, step - 1)
    if config.monitor.enabled:
        metrics.update(monitor_metrics(res.run, step, metrics, history, config.monitor, known_programs(config)))
    findings = detect([*history, metrics], config)
    metrics.update({f"monitor/alert/{finding.name}": 1.0 for finding in findings})
    return metrics, findings


def iteration_findings(res: Resources, step: int) -> list[Finding]:
    """What the detectors found at a finished iteration (read back from its metrics.json)."""
    return [Finding(**item) for item in res.run.read_json(step, "metrics.json").get("findings", [])]


def run_verdict(run: RunDir, last_step: int) -> str:
    """One line: did the run learn anything (the trend of its format, validity and accuracy)."""
    return learning_verdict([m for m in metrics_history(run, last_step) if m])


def evaluation_due(config: AZRConfig, step: int) -> bool:
    """In-training evaluation runs every `trainer.eval_every` iterations when benchmarks are set."""
    return bool(config.eval.benchmarks) and step % config.trainer.eval_every == 0


def evaluate_if_due(res: Resources, step: int, tracker: Any = None) -> dict[str, float]:
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
        tracker.log_metrics(step, record["metrics"])
        record["logged"] = True
        atomic_write_json(res.run.stage_path(step, "eval.json"), record)
    return record["metrics"]


def close_resources(res: Resources) -> None:
    """Stop the sandbox workers and the rollout engine this run started (not those it was handed)."""
    try:
        close = getattr(res.executor, "close", None)
        if close is not None and res.extra.get("owns_executor"):
            close()
    finally:
        if res.extra.get("owns_policy"):
            res.policy.close()
