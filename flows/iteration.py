"""One self-play iteration as a Prefect flow: the stages of docs/architecture.md as tasks, in order.

It runs inside a training flow run, whose process holds the engine client, the executor and the
buffers (azr.pipeline.context); the tasks pass only the iteration number and file paths.
"""

from __future__ import annotations

from prefect import flow

from azr.pipeline.context import get_resources
from tasks.stages import stage_tasks


@flow(name="azr-iteration", flow_run_name="iteration-{step}", persist_result=False, log_prints=False)
def iteration_flow(step: int) -> dict[str, list[str]]:
    """Build prompts, propose and solve (one `generate-propose-solve` task under
    `rollout.merge_calls`, else `propose` here and `solve` after the Monte-Carlo solves),
    validate, Monte-Carlo solves, safety, rewards, update, commit."""
    merge_calls = get_resources().config.rollout.merge_calls
    return {stage.name: stage(step) for stage in stage_tasks(merge_calls)}
