"""One self-play iteration as a Prefect flow: the stages of the stage table (azr/pipeline/registry.py)
as tasks, in order.

It runs inside a training flow run, whose process holds the run's context (engine client,
executor, buffers: azr.pipeline.context.RunContext); the flow hands it to every task, with the
paths the task reads: the lists the tasks before it returned, so the Prefect UI draws the data
edges between them. The context is a live object, not a value Prefect can store: the flow does
not validate or persist it, and the UI shows the parameter as `<RunContext>`.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from azr.pipeline.context import RunContext
from azr.pipeline.registry import REWARDS, UPDATE, Stage, overlap_phases, stages_for
from azr.pipeline.stages import pending_update, stage_outputs
from tasks.stages import STAGE_TASKS, SYNC_TASK


@flow(name="azr-iteration", flow_run_name="iteration-{step}", persist_result=False, log_prints=False,
      validate_parameters=False)
def iteration_flow(res: RunContext, step: int) -> dict[str, list[Path]]:
    """Build prompts, propose and solve (one `generate-propose-solve` task under
    `rollout.merge_calls`, else `propose` here and `solve` after the Monte-Carlo solves),
    validate, Monte-Carlo solves, safety, rewards, update, commit; the paths each wrote.

    One-step-off (`rollout.async_level: 1`, docs/algorithm.md §14.4): build prompts, then the
    generation task(s) of this iteration and the update task of iteration step-1 submitted
    together (side by side in the UI), the weight sync once both are done, then validate ...
    commit; this iteration's update runs in the next iteration's flow (the last one: the
    training flow's `finish-update`)."""
    written: dict[str, list[Path]] = {}
    writer: dict[str, str] = {}  # file name -> the stage whose task wrote it

    def inputs_of(stage: Stage) -> dict[str, list[Path]]:
        return {name: written[name] for name in dict.fromkeys(writer[file] for file in stage.reads)}

    def record(stage: Stage, paths: list[Path]) -> None:
        written[stage.name] = paths
        writer.update({path.name: stage.name for path in paths})

    if res.config.rollout.async_level == 0:
        for stage in stages_for(res.config.rollout.merge_calls):
            record(stage, STAGE_TASKS[stage.name](res, step, inputs_of(stage)))
        return written
    before, generation, after = overlap_phases(res.config.rollout.merge_calls)
    for stage in before:
        record(stage, STAGE_TASKS[stage.name](res, step, inputs_of(stage)))
    pending = pending_update(res, step)
    # the servers must hold the weights the trainer holds now, before its update: a no-op but
    # after a resume (the servers start from the weights exported before the checkpoint loaded)
    res.policy.sync_rollout_weights()
    update_task = STAGE_TASKS[UPDATE.name].with_options(task_run_name=f"update-{pending}")
    scored = {REWARDS.name: stage_outputs(res.run, pending, REWARDS)} if pending is not None else {}
    # iteration step-1's update beside this iteration's generation; without a line to the
    # servers of its own (an in-process policy) the generation goes first, then the update
    update = update_task.submit(res, pending, scored) if pending is not None and res.overlaps else None
    generated = None
    for stage in generation:
        generated = STAGE_TASKS[stage.name].submit(res, step, inputs_of(stage),
                                                   wait_for=[generated] if generated is not None else None)
        record(stage, generated.result())
    if pending is not None:
        if update is not None:
            update.result()
        else:
            update_task(res, pending, scored)
        SYNC_TASK(res, pending)
    for stage in after:
        record(stage, STAGE_TASKS[stage.name](res, step, inputs_of(stage)))
    return written
