"""One self-play iteration as a Prefect flow: the eight stages of DESIGN.md as tasks, in order.

It runs inside a training flow run, whose process holds the engine client, the executor and the
buffers (azr.pipeline.resources); the tasks pass only the iteration number and file paths.
"""

from __future__ import annotations

from prefect import flow

from tasks.stages import STAGE_TASKS


@flow(name="azr-iteration", flow_run_name="iteration-{step}", persist_result=False, log_prints=False)
def iteration_flow(step: int) -> dict[str, list[str]]:
    """Build prompts, propose, validate, Monte-Carlo solves, solve, rewards, update, commit."""
    return {stage.name: stage(step) for stage in STAGE_TASKS}
