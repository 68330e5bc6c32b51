"""Flows for schedules: continue a named training run, and evaluate new checkpoints.

`extend_flow` trains a named run N iterations further (resume). A training run holds a Prefect
global concurrency limit of its own while it trains (flows/run_slot.py), so a night whose run is
still going is skipped (`if_running: skip`) or waits for it (`queue`).

`evaluate_new_checkpoints_flow` looks at every run directory under `runs` and evaluates the
newest checkpoint of each run that has one not yet evaluated, on the benchmarks the run asks for
(its `eval.on_checkpoint`, else `eval.benchmarks`) or those given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger
from prefect.states import Completed, State
from pydantic import Field

from azr.config.loading import ConfigError
from azr.engine.training.checkpoints import list_checkpoints
from azr.eval.benchmarks.registry import SUITES, get_benchmark
from azr.eval.runner import PLAN_FILE
from azr.eval.results import SUMMARY_FILE
from azr.pipeline.run_dir import RunDir
from azr.pipeline.run import next_step
from flows.evaluation import evaluate_flow
from flows.run_slot import run_is_going
from flows.training import train_flow


@flow(name="azr-extend", flow_run_name="extend {run_dir} by {iterations}", persist_result=False)
def extend_flow(
    run_dir: str = Field(
        ..., json_schema_extra={"title": "Run directory"},
        description="The training run to continue (on the worker, relative to the project), e.g. runs/cpu-20260101-020000.",
    ),
    iterations: int = Field(
        1, ge=1, json_schema_extra={"title": "Iterations to add"},
        description="Iterations to train beyond those the run has done.",
    ),
    if_running: Literal["skip", "queue"] = Field(
        "skip", json_schema_extra={"title": "If the run is still going"},
        description="`skip`: end at once (state Skipped) when another flow run is training this run; "
        "`queue`: wait until it finishes, then extend it.",
    ),
) -> dict | State:
    """Train the run in `run_dir` `iterations` more iterations (resume), unless it is still going."""
    logger = get_run_logger()
    run = RunDir(Path(run_dir))
    if not run.config_path.is_file():
        raise ConfigError(f"cannot extend {run_dir}: it is not a training run directory (no config.yaml there); "
                          "set `run_dir` to a run started earlier")
    if run_is_going(run.root):
        if if_running == "skip":
            message = f"{run.root.name} is still being trained by another flow run; skipped (if_running=skip)"
            logger.info(message)
            return Completed(name="Skipped", message=message)
        logger.info("%s is still being trained by another flow run; waiting for it (if_running=queue)", run.root.name)
    logger.info("extending %s (%d iterations done) by %d", run.root.name, next_step(run) - 1, iterations)
    return train_flow(preset=None, run_dir=run_dir, resume=True, extend_by=iterations)


def _finished(folder: Path) -> bool:
    """One benchmark's folder has its summary; a suite's folder has one for each of its benchmarks."""
    if (folder / SUMMARY_FILE).is_file():
        return True
    parts = [plan.parent for plan in folder.glob(f"*/{PLAN_FILE}")]
    return (folder / "suite.json").is_file() and bool(parts) and all((p / SUMMARY_FILE).is_file() for p in parts)


def _evaluated(run: RunDir, benchmark: str, data: str | None, prompt: str, step: int) -> tuple[bool, str | None]:
    """Whether that checkpoint was evaluated on that benchmark (or suite); an unfinished evaluation's folder."""
    key = benchmark.strip().lower() if benchmark.strip().lower() in SUITES else get_benchmark(benchmark).metric_key(data)
    unfinished = None
    for folder in sorted((run.root / "eval").glob(f"{key}-{prompt}-step{step:08d}-*")):
        if _finished(folder):
            return True, None
        if (folder / PLAN_FILE).is_file() or (folder / "suite.json").is_file():
            unfinished = str(folder)
    return False, unfinished


@flow(name="azr-evaluate-new-checkpoints", persist_result=False)
def evaluate_new_checkpoints_flow(
    runs: str = Field(
        "runs", json_schema_extra={"title": "Runs folder"},
        description="The folder holding training run directories (on the worker, relative to the project).",
    ),
    benchmarks: list[str] | None = Field(
        None, json_schema_extra={"title": "Benchmarks"},
        description="Benchmarks to evaluate every run on; empty: each run's own eval.on_checkpoint, else its "
        "eval.benchmarks (a run that names none is left alone).",
    ),
) -> dict[str, list[str]]:
    """Evaluate the newest checkpoint of every run that has one not evaluated yet."""
    logger = get_run_logger()
    root = Path(runs)
    if not root.is_dir():
        raise ConfigError(f"the runs folder {runs} does not exist on this worker; set `runs` to where training runs are")
    done: dict[str, list[str]] = {}
    failed: list[str] = []
    for config_path in sorted(root.glob("*/config.yaml")):
        run = RunDir(config_path.parent)
        checkpoints = list_checkpoints(run.checkpoint_dir)
        if not checkpoints:
            continue
        step = checkpoints[-1].step
        config = run.read_config()
        wanted = benchmarks or config.eval.on_checkpoint or config.eval.benchmarks
        if not wanted:
            logger.info("%s: newest checkpoint step %d; the run names no benchmark (eval.on_checkpoint), skipped",
                        run.root.name, step)
            continue
        for name in wanted:
            data = config.eval.data_source(name)
            evaluated, unfinished = _evaluated(run, name, data, config.eval.prompt, step)
            if evaluated:
                continue
            logger.info("%s: evaluating checkpoint step %d on %s", run.root.name, step, name)
            state = evaluate_flow.with_options(flow_run_name=f"{name} of {run.root.name} step {step}")(
                benchmark=name, model=str(run.root.resolve()), step=step, data=data, limit=config.eval.limit,
                prompt=config.eval.prompt, max_new_tokens=config.eval.max_new_tokens, out_dir=unfinished,
                data_dir=config.eval.data_dir,
                return_state=True,
            )
            if state.is_completed():
                done.setdefault(run.root.name, []).append(name)
            else:
                failed.append(f"{run.root.name} on {name}: {state.message}")
    if failed:
        raise RuntimeError("some evaluations failed: " + "; ".join(failed))
    logger.info("evaluated %d new checkpoint(s)", sum(len(v) for v in done.values()))
    return done
