"""The iteration as a Prefect flow: each stage task is handed the run's context and the paths it
reads (the lists the tasks before it returned), so Prefect records the data edges between the
tasks, and the iteration's files are those of the stage table."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.events.worker import EventsWorker
from prefect.testing.utilities import prefect_test_harness

from azr.config.loading import build_config
from azr.engine.rank.policy import Policy
from azr.pipeline.registry import StageFile, stages_for
from azr.pipeline.run import close_resources, open_resources
from azr.pipeline.run_dir import open_run_dir
from azr.sandbox import SandboxExecutor
from flows.iteration import iteration_flow

CONFIG = build_config("tiny", overrides=["trainer.iterations=1", "sandbox.timeout_s=3", "rollout.max_new_tokens=8",
                                         "rollout.merge_calls=false"])


@pytest.fixture(scope="module")
def executor() -> Iterator[SandboxExecutor]:
    with SandboxExecutor.from_run_config(CONFIG) as ex:
        yield ex


TASK_RECORD_WAIT_S = 120.0  # the server records task runs from events, asynchronously


def _flush_events() -> None:
    """Send the events still queued and retire the events worker.

    The worker is one per process and keeps the API address it was made with: a worker left by an
    earlier test's temporary server would send this test's task-run events to a closed port, and
    the server under test would record no task runs at all."""
    EventsWorker.drain_all(timeout=60)


async def _upstream_by_task(expected: int) -> dict[str, set[str]]:
    """Each task run's stage task name -> the task names whose results it was handed."""
    async with get_client() as client:
        deadline = asyncio.get_running_loop().time() + TASK_RECORD_WAIT_S
        runs = await client.read_task_runs()
        while len(runs) < expected and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.5)
            runs = await client.read_task_runs()
    names = {run.id: run.name.rsplit("-", 1)[0] for run in runs}
    return {names[run.id]: {names[i.id] for inputs in run.task_inputs.values() for i in inputs if i.id in names}
            for run in runs}


def test_each_task_is_handed_the_paths_the_tasks_before_it_wrote(tmp_path: Path, executor: SandboxExecutor) -> None:
    run, config = open_run_dir(tmp_path / "run", CONFIG, resume=False)
    res = open_resources(run, config, executor=executor, policy=Policy.create(config, cpu=True))
    try:
        _flush_events()
        with prefect_test_harness(server_startup_timeout=180):
            written = iteration_flow(res, 1)
            _flush_events()
            upstream = asyncio.run(_upstream_by_task(expected=len(written)))
    finally:
        close_resources(res)
    assert list(written) == [stage.name for stage in stages_for(merge_calls=False)]
    assert sorted(path.name for paths in written.values() for path in paths) == sorted(StageFile)
    assert all(path.exists() for paths in written.values() for path in paths) and run.iteration_done(1)
    assert upstream == {
        "build-prompts": set(),
        "propose": {"build-prompts"},
        "validate": {"build-prompts", "propose"},
        "mc-rollouts": {"validate"},
        "solve": {"build-prompts"},
        "safety": {"propose", "mc-rollouts", "solve"},
        "rewards": {"propose", "validate", "mc-rollouts", "solve", "safety"},
        "update": {"rewards"},
        "commit": {"validate", "mc-rollouts"},
    }
