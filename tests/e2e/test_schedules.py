"""The scheduled deployments against a real Prefect server: extend a named run (skip or queue
while it is still going, through its global concurrency limit) and evaluate new checkpoints.

Slow (a server, a worker, one tiny iteration and one tiny evaluation on the worker: a few
minutes on 2 busy cores). Deploys from a copy of the repository, like tests/e2e/test_deployment.py,
and checks that no process it started is left.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from azr.config.loading import build_config
from azr.pipeline.run_dir import RunDir
from tests.support.prefect_local import ROOT, LocalPrefect
from tests.e2e.test_deployment import _flow_run_id, copy_repository
from tests.e2e.test_deployment import prefect  # noqa: F401 - the fixture: a server, stopped by pid, nothing left

pytestmark = pytest.mark.timeout(1500)

POOL = "azr-test-schedules"
RUN_TIMEOUT_S = 600.0


def _wait(client: Any, prefect: LocalPrefect, run_id: str, until: str = "final") -> Any:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        flow_run = client.read_flow_run(run_id)
        state = flow_run.state
        if state is not None and (state.is_final() if until == "final" else state.name == until):
            return flow_run
        assert time.monotonic() < deadline, f"{flow_run.name} still {flow_run.state_name}:\n{prefect.log_tail(f'worker-{POOL}', 60)}"
        time.sleep(1)


def _logs(client: Any, run_id: str) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    return [log.message for log in client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))]


def test_extend_a_named_run_and_evaluate_its_new_checkpoint(prefect: LocalPrefect, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.run_slot import hold_run_slot

    repo = tmp_path / "repo"
    copy_repository(repo)
    runs = tmp_path / "runs"
    fixture = ROOT / "tests" / "fixtures" / "eval" / "cruxeval_mini.jsonl"
    # A named run that has done nothing yet; the nightly extension trains it further.
    run = RunDir(runs / "tiny-nightly")
    run.root.mkdir(parents=True)
    run.write_config(build_config("tiny", overrides=[
        "trainer.iterations=1",
        "eval.on_checkpoint=[cruxeval-o]", f"eval.data={{cruxeval-o: {fixture}}}", "eval.limit=2",
    ]))

    prefect.cli("work-pool", "create", POOL, "--type", "process")
    for name in ("azr-extend", "azr-eval-new-checkpoints"):
        prefect.cli("deploy", "--name", name, "--pool", POOL, cwd=repo, timeout=300)
    prefect.start_worker(POOL, cwd=repo, env={"AZR_PROJECT_DIR": str(repo), "PREFECT_WORKER_QUERY_SECONDS": "1"})

    def start(deployment: str, **params: str) -> str:
        args = [a for key, value in params.items() for a in ("--param", f"{key}={value}")]
        return _flow_run_id(prefect.cli("deployment", "run", deployment, *args, cwd=repo))

    with temporary_settings(updates={PREFECT_API_URL: prefect.api_url}), get_client(sync_client=True) as client:
        extend = client.read_deployment_by_name("azr-extend/azr-extend")
        (nightly,) = extend.schedules
        assert nightly.schedule.cron == "0 2 * * *" and nightly.active is False
        assert nightly.parameters == {"run_dir": "runs/cpu-nightly", "iterations": 10, "if_running": "skip"}
        evaluate = client.read_deployment_by_name("azr-evaluate-new-checkpoints/azr-eval-new-checkpoints")
        assert [s.schedule.cron for s in evaluate.schedules] == ["30 * * * *"]

        # While another flow run trains the run (it holds the run's slot and lock), a night is skipped...
        with hold_run_slot(run.root):
            skipped = _wait(client, prefect, start("azr-extend/azr-extend", run_dir=str(run.root), iterations="1"))
            assert skipped.state.is_completed() and skipped.state.name == "Skipped", skipped.state
            assert "still being trained" in skipped.state.message
            # ... or queued: it waits for the slot, training nothing meanwhile.
            queued_id = start("azr-extend/azr-extend", run_dir=str(run.root), iterations="1", if_running="queue")
            deadline = time.monotonic() + 120
            while not any("waiting for it" in line for line in _logs(client, queued_id)):
                assert time.monotonic() < deadline, prefect.log_tail(f"worker-{POOL}", 60)
                time.sleep(1)
            time.sleep(3)
            assert not client.read_flow_run(queued_id).state.is_final()
            assert run.completed_steps() == []
        queued = _wait(client, prefect, queued_id)
        assert queued.state.is_completed(), f"{queued.state}\n{prefect.log_tail(f'worker-{POOL}', 80)}"
        assert run.completed_steps() == [1]  # extended by one iteration, from its files
        trained = [r for r in client.read_flow_runs() if r.name == run.root.name]
        assert len(trained) == 1 and trained[0].state.is_completed()

        # The hourly evaluation finds the new checkpoint (step 1) and evaluates it once.
        first = _wait(client, prefect, start("azr-evaluate-new-checkpoints/azr-eval-new-checkpoints", runs=str(runs)))
        assert first.state.is_completed(), f"{first.state}\n{prefect.log_tail(f'worker-{POOL}', 80)}"
        summaries = list((run.root / "eval").glob("cruxeval_o-azr-step00000001-*/summary.json"))
        assert len(summaries) == 1
        again = _wait(client, prefect, start("azr-evaluate-new-checkpoints/azr-eval-new-checkpoints", runs=str(runs)))
        assert again.state.is_completed()
        deadline = time.monotonic() + 60  # logs reach the server a little after the final state
        while not any("evaluated 0 new checkpoint" in line for line in _logs(client, again.id)):
            assert time.monotonic() < deadline, _logs(client, again.id)
            time.sleep(1)
        assert len(list((run.root / "eval").glob("cruxeval_o-*/summary.json"))) == 1


def test_a_dead_holders_lock_is_free(tmp_path: Path) -> None:
    """The liveness check behind stale-slot recovery: a run's lock is held exactly while a live
    process holds it, and a holder killed with SIGKILL leaves it free."""
    import signal
    import subprocess
    import sys

    from flows.run_slot import _lock_is_held, lock_path

    assert not _lock_is_held(tmp_path)  # no lock file: nobody trains here
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
         "fcntl.flock(f.fileno(), fcntl.LOCK_EX); print('held', flush=True); time.sleep(600)",
         str(lock_path(tmp_path))], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert _lock_is_held(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert not _lock_is_held(tmp_path)
