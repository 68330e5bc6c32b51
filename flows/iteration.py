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
from azr.pipeline.registry import stages_for
from tasks.stages import STAGE_TASKS


@flow(name="azr-iteration", flow_run_name="iteration-{step}", persist_result=False, log_prints=False,
      validate_parameters=False)
def iteration_flow(res: RunContext, step: int) -> dict[str, list[Path]]:
    """Build prompts, propose and solve (one `generate-propose-solve` task under
    `rollout.merge_calls`, else `propose` here and `solve` after the Monte-Carlo solves),
    validate, Monte-Carlo solves, safety, rewards, update, commit; the paths each wrote."""
    written: dict[str, list[Path]] = {}
    writer: dict[str, str] = {}  # file name -> the stage whose task wrote it
    for stage in stages_for(res.config.rollout.merge_calls):
        inputs = {name: written[name] for name in dict.fromkeys(writer[file] for file in stage.reads)}
        written[stage.name] = STAGE_TASKS[stage.name](res, step, inputs)
        writer.update({path.name: stage.name for path in written[stage.name]})
    return written
