"""One Prefect task per stage of the stage table (azr/pipeline/registry.py), built in a loop:
name, retries and layout come from the table.

A task takes the run's context, the iteration and the paths it reads (the lists the tasks
before it returned, so the Prefect UI draws the data edges between them); it runs the stage
(skipped when resuming past it) and returns the paths it wrote. The context holds live objects
(engine client, executor, buffers): the tasks neither cache nor persist their results.

Retries are set in the table, only where a second attempt is safe: validation, safety and
reward computation are pure functions of the stage files. Generation is not retried blindly,
the update is made idempotent by its completion marker, and prompt building must run once per
iteration (it advances the buffers' random state).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from azr.pipeline.context import RunContext
from azr.pipeline.registry import STAGES, Stage, stages_for
from azr.pipeline.stage_summary import stage_summary
from azr.pipeline.stages import run_stage, sync_rollout

StageInputs = dict[str, list[Path]]
"""The paths a stage reads, by the stage that wrote them (that stage's task's return value)."""


def _check_inputs(stage: Stage, inputs: StageInputs) -> None:
    """Every file the stage reads is among the paths it was handed (a wiring error otherwise)."""
    handed = {path.name for paths in inputs.values() for path in paths}
    missing = [name for name in stage.reads if name not in handed]
    if missing:
        raise ValueError(f"the {stage.task_name} task was not handed {', '.join(missing)} (from {sorted(inputs)})")


def _stage_task(stage: Stage) -> Task[..., list[Path]]:
    @task(name=stage.task_name, retries=stage.retries, retry_delay_seconds=1, cache_policy=NO_CACHE,
          persist_result=False, log_prints=False)
    def run(res: RunContext, step: int, inputs: StageInputs) -> list[Path]:
        _check_inputs(stage, inputs)
        paths = run_stage(res, step, stage)
        get_run_logger().info(stage_summary(res.run, step, stage))
        return paths

    return run


STAGE_TASKS: dict[str, Task[..., list[Path]]] = {stage.name: _stage_task(stage) for stage in STAGES}
"""The task of each stage, by stage name."""


@task(name="sync-weights", cache_policy=NO_CACHE, persist_result=False, log_prints=False)
def sync_weights_task(res: RunContext, step: int) -> None:
    """One-step-off: update `step`'s weights into the rollout servers, after the generation
    that ran beside it (docs/algorithm.md §14.4)."""
    sync_rollout(res, step)


SYNC_TASK = sync_weights_task


def stage_tasks(merge_calls: bool) -> tuple[Task[..., Any], ...]:
    """The iteration's tasks in order: with `rollout.merge_calls`, propose and solve are one
    task (`generate-propose-solve`, one engine call), else two (azr.pipeline.registry)."""
    return tuple(STAGE_TASKS[stage.name] for stage in stages_for(merge_calls))

