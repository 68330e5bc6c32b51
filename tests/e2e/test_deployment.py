"""End to end: deploy from prefect.yaml to a real Prefect server, run the tiny preset on a worker.

Slow (a server start, two deployments, one self-play iteration on a worker: about a minute
on 2 idle cores). It starts `prefect server start` on 127.0.0.1 with its own PREFECT_HOME, a process work
pool and a worker, deploys `azr-train` (and `azr-eval`, whose checkpoint trigger must create an
evaluation run for the training run's directory) from a copy of the repository's files, so runs
never write into the checkout, then stops the worker before the server, both by process id, and
checks that no process it started is left.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.prefect_local import ROOT, LocalPrefect, processes_with_marker

pytestmark = [
    pytest.mark.skipif(
        not (ROOT / "flows" / "training.py").exists(),
        reason="flows/training.py does not exist yet: nothing to deploy (the training flow arrives with the pipeline)",
    ),
    pytest.mark.timeout(1200),
]

RUN_TIMEOUT_S = 600.0
TRAIN_POOL = "azr-test-process"
EVAL_POOL = "azr-test-eval"  # no worker: triggered evaluation runs wait there, Scheduled


def copy_repository(dest: Path) -> None:
    """The files git would ship (tracked, plus untracked ones not ignored) - never .venv or runs/."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True, timeout=60,
        ).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        ignore = shutil.ignore_patterns(".git", ".venv", "runs", "mlruns", ".azr-state", "__pycache__", ".*cache")
        shutil.copytree(ROOT, dest, ignore=ignore)
        return
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


@pytest.fixture
def prefect(tmp_path: Path) -> Iterator[LocalPrefect]:
    local = LocalPrefect(tmp_path / "prefect-home", tmp_path / "logs").start()
    try:
        yield local
    finally:
        killed = local.stop()  # workers first, then the server
        leftovers = processes_with_marker(local.marker)
        # The server's database, the repository copy and the run (~70 MB) go; the logs stay.
        for path in (local.home, tmp_path / "repo", tmp_path / "runs"):
            shutil.rmtree(path, ignore_errors=True)
        assert not killed, f"processes did not stop on SIGTERM and were killed: {killed}"
        assert leftovers == [], f"processes left running: {leftovers}"


def _flow_run_id(output: str) -> str:
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", output)
    assert match, f"no flow run id in:\n{output}"
    return match.group(1)


def test_deploy_and_run_the_tiny_preset_on_a_worker(prefect: LocalPrefect, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    repo = tmp_path / "repo"
    copy_repository(repo)
    assert (repo / "prefect.yaml").exists() and (repo / "flows" / "training.py").exists()
    run_dir = tmp_path / "runs" / "tiny-deployed"

    prefect.cli("work-pool", "create", TRAIN_POOL, "--type", "process")
    prefect.cli("work-pool", "create", EVAL_POOL, "--type", "process")
    prefect.cli("deploy", "--name", "azr-train", "--pool", TRAIN_POOL, cwd=repo, timeout=300)
    prefect.cli("deploy", "--name", "azr-eval", "--pool", EVAL_POOL, cwd=repo, timeout=300)
    worker = prefect.start_worker(
        TRAIN_POOL, cwd=repo, env={"AZR_PROJECT_DIR": str(repo), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    )
    fixture = ROOT / "tests" / "fixtures" / "eval" / "cruxeval_mini.jsonl"
    changes = {"trainer": {"iterations": 1},
               "eval": {"on_checkpoint": ["cruxeval-o"], "data": [{"benchmark": "cruxeval-o", "source": str(fixture)}],
                        "limit": 3}}
    started = prefect.cli(
        "deployment", "run", "azr-train/azr-train",
        "--param", "preset=tiny",
        "--param", f"changes={json.dumps(changes)}",
        "--param", f"run_dir={run_dir}",
        cwd=repo,
    )
    run_id = _flow_run_id(started)

    with temporary_settings(updates={PREFECT_API_URL: prefect.api_url}), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("azr-train/azr-train")
        assert deployment.work_pool_name == TRAIN_POOL
        assert deployment.parameters == {"preset": "cpu"}
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $AZR_PROJECT_DIR }}"}}
        ]
        schema = deployment.parameter_openapi_schema
        assert schema["properties"]["preset"]["title"] == "Preset" and "`tiny`:" in schema["properties"]["preset"]["description"]

        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            flow_run = client.read_flow_run(run_id)
            if flow_run.state is not None and flow_run.state.is_final():
                break
            assert worker.poll() is None, f"worker died:\n{prefect.log_tail(f'worker-{TRAIN_POOL}')}"
            assert time.monotonic() < deadline, (
                f"flow run still {flow_run.state_name} after {RUN_TIMEOUT_S:.0f} s:\n"
                f"{prefect.log_tail(f'worker-{TRAIN_POOL}')}"
            )
            time.sleep(2)
        assert flow_run.state.is_completed(), (
            f"flow run ended {flow_run.state_name}: {flow_run.state.message}\n{prefect.log_tail(f'worker-{TRAIN_POOL}', 80)}"
        )
        assert flow_run.parameters["preset"] == "tiny"
        assert (run_dir / "iterations").is_dir(), sorted(p.name for p in run_dir.iterdir())
        assert flow_run.name == run_dir.name  # named after the training run, not at random
        (child,) = [r for r in client.read_flow_runs() if r.parent_task_run_id is not None]
        assert child.name == f"iteration-1 of {run_dir.name}"
        artifacts = client.read_artifacts()
        keys = {a.key for a in artifacts if a.key}
        assert {f"azr-{run_dir.name}-iterations", f"azr-{run_dir.name}-mlflow", f"azr-{run_dir.name}-progress"} <= keys
        (on_child,) = [a for a in artifacts if a.flow_run_id == child.id and a.type == "table"]
        assert len(on_child.data) == 6 and "valid proposals" in on_child.data[0]  # one row per group, plain names
        task_names = {t.name.rsplit("-", 1)[0] for t in client.read_task_runs()}
        assert "evaluate" not in task_names  # not due (eval.benchmarks is empty): not shown
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        deadline = time.monotonic() + 60  # logs reach the server a little after the final state
        while True:
            lines = [log.message for log in client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[child.id])))]
            if any(line.startswith("iteration 1 validate: valid ") for line in lines):
                break
            assert time.monotonic() < deadline, lines
            time.sleep(1)

        # The checkpoint's azr.checkpoint.evaluate event (the run named cruxeval-o in
        # eval.on_checkpoint) reached the azr-eval trigger, with the run's eval settings.
        (evaluation,) = [d for d in client.read_deployments() if d.name == "azr-eval"]  # any flow name
        deadline = time.monotonic() + 120
        while True:
            triggered = [r for r in client.read_flow_runs() if r.deployment_id == evaluation.id]
            if triggered or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert len(triggered) == 1, f"expected one triggered evaluation run, got {len(triggered)}"
        assert triggered[0].parameters["model"] == str(run_dir.resolve())
        assert triggered[0].parameters["step"] == 1
        assert triggered[0].parameters["benchmark"] == "cruxeval-o"
        assert triggered[0].parameters["data"] == str(fixture) and triggered[0].parameters["limit"] == 3
        client.delete_flow_run(triggered[0].id)

    # Nothing of the run was written into the checkout.
    assert not (ROOT / "runs" / run_dir.name).exists()
