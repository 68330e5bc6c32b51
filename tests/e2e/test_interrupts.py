"""Interrupts with real signals beyond those of test_pipeline_flows (generation, update, checkpoint
save): during the seeding stage, a second Ctrl-C within the grace period, and a Prefect
cancellation of a deployment's flow run through the API (what the UI's Cancel button sends).
Each ends with no process of the run left and a `--resume` (or a resumed flow run) that finishes."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from azr.pipeline.run_dir import RunDir
from azr.pipeline.seeding import seeding_dir
from tests.e2e.test_deployment import (
    copy_repository,
    prefect,  # noqa: F401 - a fixture: a server, stopped by pid, nothing left
)
from tests.e2e.test_pipeline_flows import (
    assert_interrupted,
    azr,
    check_consistent_run,
    finish,
    prefect_env,  # noqa: F401 - a fixture
    session_processes,
    start_paused,
)
from tests.support.prefect_local import LocalPrefect, processes_with_marker

# Seeding on the tiny random model: it never proposes a valid task, so the pools stay at the
# identity task and seeding ends after three batches per the limit, the same way for every run.
SEEDING = ["--set", "buffer.seeding=model", "--set", "buffer.seed_batch_factor=2", "--set", "buffer.seed_max_batches=3",
           "--set", "rollout.max_new_tokens=256"]


def seeding_files(root: Path) -> dict[str, pd.DataFrame]:
    return {path.name: pd.read_parquet(path) for path in sorted(seeding_dir(RunDir(root)).glob("*.parquet"))}


@pytest.mark.timeout(1800)  # three runs of the tiny preset; slow when the machine is shared
def test_ctrl_c_during_seeding_then_resume_continues_from_its_batches(tmp_path: Path, prefect_env: dict[str, str]) -> None:  # noqa: F811
    reference = tmp_path / "runs" / "seeding-reference"
    whole = azr(["train", "--preset", "tiny", "--run-dir", str(reference), *SEEDING], prefect_env)
    expected, _ = whole.communicate(timeout=900)
    assert whole.returncode == 2 and "buffer.seed_max_batches=3" in expected, expected[-3000:]  # a SeedingError
    assert "(batch " not in expected, expected[-3000:]  # no seeding progress bar ("... pool (batch N)") below the error

    root = tmp_path / "runs" / "seeding-interrupted"
    process = azr(["train", "--preset", "tiny", "--run-dir", str(root), *SEEDING], prefect_env)
    log = root / "engine" / "engine.log"
    deadline = time.monotonic() + 600
    while not (log.exists() and log.read_text(errors="replace").count("command generate started") >= 2):
        assert process.poll() is None, process.communicate()[0][-3000:]  # the second batch's generation
        assert time.monotonic() < deadline, "seeding never got to its second batch"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C
    output, _ = process.communicate(timeout=300)
    assert_interrupted(process, output, root, 130)
    assert "seeding" in " ".join(output.strip().splitlines()[-3:])  # it says what was interrupted
    kept = {path.name: path.stat().st_mtime_ns for path in seeding_dir(RunDir(root)).glob("*.parquet")}
    assert "io_0000_responses.parquet" in kept

    resumed = azr(["train", "--resume", str(root)], prefect_env)
    output, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 2 and "buffer.seed_max_batches=3" in output, output[-3000:]
    assert "Traceback" not in output
    for name, mtime in kept.items():  # the batches done before the interrupt were not made again
        assert (seeding_dir(RunDir(root)) / name).stat().st_mtime_ns == mtime, name
    ours, theirs = seeding_files(root), seeding_files(reference)
    assert ours.keys() == theirs.keys() and len(ours) == 9  # prompts, responses, validation of 3 batches
    for name, frame in theirs.items():
        pd.testing.assert_frame_equal(ours[name], frame, obj=name)
    statuses = [mlflow.MlflowClient(info["tracking_uri"]).get_run(info["mlflow_run_id"]).info.status
                for info in (RunDir(root).read_info(), RunDir(reference).read_info())]
    assert statuses == ["FAILED", "FAILED"]


@pytest.mark.timeout(1200)
def test_a_second_ctrl_c_stops_at_once_and_resume_finishes(tmp_path: Path, prefect_env: dict[str, str]) -> None:  # noqa: F811
    """The rank is held inside a checkpoint save, so the first Ctrl-C waits out the engine's grace
    period; the second one, within it, kills the engine and `azr train` at once. The process
    watchdog then stops Prefect's temporary server as after any kill -9: nothing is left."""
    root = tmp_path / "runs" / "tiny-twice"
    process = start_paused(["train", "--preset", "tiny", "--iterations", "2", "--run-dir", str(root)], prefect_env,
                           ".tmp-step-00000001/meta.json", tmp_path / "paused-save")
    os.killpg(process.pid, signal.SIGINT)
    seen = ""
    deadline = time.monotonic() + 60
    while "stopping the run" not in seen:  # the first interrupt was taken: the engine is being stopped
        assert process.poll() is None and time.monotonic() < deadline, seen[-3000:]
        seen += process.stdout.readline()
    os.killpg(process.pid, signal.SIGINT)
    output = seen + process.communicate(timeout=120)[0]
    assert process.returncode == -signal.SIGKILL, output[-3000:]
    assert "second interrupt" in output and "Traceback" not in output
    deadline = time.monotonic() + 30
    while (left := session_processes(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes outlived the run: {left}"
    assert not (root / "checkpoints" / "step-00000001").exists()  # the torn save is no checkpoint

    output = finish(azr(["train", "--resume", str(root)], prefect_env))
    assert "run finished: 2 iterations" in output
    check_consistent_run(root, 2)


TRAIN_POOL = "azr-test-cancel"


@pytest.mark.timeout(1800)
def test_a_prefect_cancellation_stops_the_run_through_the_same_path(prefect: LocalPrefect, tmp_path: Path) -> None:  # noqa: F811
    """A deployment's flow run on a process worker, cancelled through the API while the engine
    updates: the flow run ends Cancelled, the MLflow run KILLED, the engine and the sandbox are
    gone, nothing is half-written; a flow run with `resume` then finishes the run."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Cancelling

    from tests.e2e.test_deployment import _flow_run_id

    repo = tmp_path / "repo"
    copy_repository(repo)
    run_dir = tmp_path / "runs" / "tiny-cancelled"
    prefect.cli("work-pool", "create", TRAIN_POOL, "--type", "process")
    prefect.cli("deploy", "--name", "azr-train", "--pool", TRAIN_POOL, cwd=repo, timeout=300)
    worker = prefect.start_worker(TRAIN_POOL, cwd=repo, env={
        "AZR_PROJECT_DIR": str(repo), "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_CANCELLATION_POLL_SECONDS": "1"})
    # longer sequences a micro-batch each: the update lasts seconds, so the cancellation lands inside it
    changes = json.dumps({"trainer": {"iterations": 2, "micro_batch_size": 1}, "rollout": {"max_new_tokens": 128}})
    started = prefect.cli("deployment", "run", "azr-train/azr-train", "--param", "preset=tiny",
                          "--param", f"changes={changes}", "--param", f"run_dir={run_dir}", cwd=repo)
    run_id = _flow_run_id(started)
    log = run_dir / "engine" / "engine.log"
    deadline = time.monotonic() + 600
    while not (log.exists() and "command update started" in log.read_text(errors="replace")):
        assert worker.poll() is None and time.monotonic() < deadline, prefect.log_tail(f"worker-{TRAIN_POOL}", 80)
        time.sleep(0.1)

    with temporary_settings(updates={PREFECT_API_URL: prefect.api_url}), get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Cancelling(message="cancelled from the test, as the UI does"))
        flow_run = _final_state(client, run_id, prefect)
        assert flow_run.state.is_cancelled(), f"{flow_run.state_name}: {flow_run.state.message}"

        info = RunDir(run_dir).read_info()
        assert mlflow.MlflowClient(info["tracking_uri"]).get_run(info["mlflow_run_id"]).info.status == "KILLED"
        own = {p.pid for p in [prefect.server, *prefect.workers] if p is not None}
        deadline = time.monotonic() + 30
        while (left := [p for p in processes_with_marker(prefect.marker) if p[0] not in own]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"processes of the cancelled run are left: {left}"
        assert not [p for p in run_dir.rglob("*.tmp") if p.is_file()], "a half-written file was left"
        assert "rank 0 stopped update" in log.read_text(errors="replace")  # the engine's stop, as for Ctrl-C
        assert not RunDir(run_dir).stage_path(1, "update.json").exists()  # the stopped update wrote nothing

        resumed = prefect.cli("deployment", "run", "azr-train/azr-train", "--param", "resume=true",
                              "--param", f"run_dir={run_dir}", cwd=repo)
        flow_run = _final_state(client, _flow_run_id(resumed), prefect)
        assert flow_run.state.is_completed(), f"{flow_run.state_name}: {flow_run.state.message}"
    check_consistent_run(run_dir, 2)


def _final_state(client, run_id: str, prefect: LocalPrefect):  # noqa: F811 - prefect: the server
    deadline = time.monotonic() + 600
    while True:
        flow_run = client.read_flow_run(run_id)
        if flow_run.state is not None and flow_run.state.is_final():
            return flow_run
        assert time.monotonic() < deadline, (
            f"flow run still {flow_run.state_name}:\n{prefect.log_tail(f'worker-{TRAIN_POOL}', 80)}")
        time.sleep(1)



@pytest.mark.timeout(1200)
def test_a_ui_cancel_of_an_azr_train_run_stops_it_and_records_cancelled(prefect: LocalPrefect, tmp_path: Path) -> None:  # noqa: F811
    """`azr train` against a real Prefect server (no worker supervises its flow run), cancelled
    through the API, as the UI's Cancel button does, while the engine updates: the run stops on
    the interrupt path (exit 143, the resume command last, MLflow KILLED, nothing left) and the
    flow run ends Cancelled, not Crashed or stuck in Cancelling."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Cancelling

    root = tmp_path / "runs" / "tiny-ui-cancel"
    process = azr(["train", "--preset", "tiny", "--iterations", "2", "--run-dir", str(root),
                   "--set", "trainer.micro_batch_size=1", "--set", "rollout.max_new_tokens=128"],
                  prefect.env({"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}))
    log = root / "engine" / "engine.log"
    deadline = time.monotonic() + 600
    while not (log.exists() and "command update started" in log.read_text(errors="replace")):
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the run never got to its update"
        time.sleep(0.1)
    info = RunDir(root).read_info()
    run_id = mlflow.MlflowClient(info["tracking_uri"]).get_run(info["mlflow_run_id"]).data.tags["azr.prefect.flow_run_id"]
    with temporary_settings(updates={PREFECT_API_URL: prefect.api_url}), get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Cancelling(message="cancelled from the test, as the UI does"))
        output, _ = process.communicate(timeout=120)
        assert_interrupted(process, output, root, 143)
        assert "a Prefect cancellation" in " ".join(output.strip().splitlines()[-3:]), output[-2000:]
        flow_run = client.read_flow_run(run_id)
        assert flow_run.state.is_cancelled(), f"{flow_run.state_name}: {flow_run.state.message}"
    assert "rank 0 stopped update" in log.read_text(errors="replace")  # the engine's own stop, as for Ctrl-C
    assert not RunDir(root).stage_path(1, "update.json").exists()
