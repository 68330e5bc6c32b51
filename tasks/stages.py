"""One Prefect task per stage. Each reaches the run's resources through the process-level
accessor, reads and writes Parquet through the stage function, and returns the paths it wrote.

Retries only where a second attempt is safe: validation and reward computation are pure
functions of the stage files. Generation is not retried blindly, the update is made
idempotent by its completion marker, and prompt building must run once per iteration (it
advances the buffers' random state).
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from azr.pipeline import stages
from azr.pipeline.context import get_resources
from azr.pipeline.stage_summary import stage_summary


def _stage_task(name: str, function, retries: int = 0):  # noqa: ANN001, ANN202
    @task(name=name.replace("_", "-"), retries=retries, retry_delay_seconds=1, cache_policy=NO_CACHE,
          persist_result=False, log_prints=False)
    def run(step: int) -> list[str]:
        res = get_resources()
        paths = [str(path) for path in function(res, step)]
        get_run_logger().info(stage_summary(res.run, step, name))
        return paths

    return run


build_prompts = _stage_task("build_prompts", stages.build_prompts)
propose = _stage_task("propose", stages.propose)
validate = _stage_task("validate", stages.validate, retries=2)
mc_rollouts = _stage_task("mc_rollouts", stages.mc_rollouts)
solve = _stage_task("solve", stages.solve)
generate_propose_solve = _stage_task("generate_propose_solve", stages.generate_propose_solve)
safety = _stage_task("safety", stages.safety, retries=1)
rewards = _stage_task("rewards", stages.rewards, retries=1)
update = _stage_task("update", stages.update)
commit = _stage_task("commit", stages.commit)

STAGE_TASKS = (build_prompts, propose, validate, mc_rollouts, solve, safety, rewards, update, commit)
MERGED_STAGE_TASKS = (build_prompts, generate_propose_solve, validate, mc_rollouts, safety, rewards, update, commit)


def stage_tasks(merge_calls: bool) -> tuple:
    """The iteration's tasks in order: with `rollout.merge_calls`, propose and solve are one
    task (`generate-propose-solve`, one engine call), else two (azr.pipeline.stages)."""
    return MERGED_STAGE_TASKS if merge_calls else STAGE_TASKS
