"""The training run through the real Prefect flows (an ephemeral server with its own
PREFECT_HOME), the real sandbox and a real SQLite MLflow store; a kill -9 in the middle of an
iteration and a resume; one iteration on the bundled model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from azr.pipeline.buffer_log import committed_steps
from azr.pipeline.run_dir import RunDir
from azr.pipeline.stages import advantages_by_group
from azr.selfplay.task_types import GROUP_NAMES

REPO = Path(__file__).resolve().parents[2]
KILLPOINT = REPO / "tests" / "support" / "killpoint"


@pytest.fixture(scope="module")
def prefect_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("prefect-home")
    return {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}


def azr(args: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:  # noqa: ANN003
    return subprocess.Popen([sys.executable, "-m", "flows.entry", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, **kwargs)


def finish(process: subprocess.Popen, timeout: float = 900) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def check_consistent_run(root: Path, iterations: int) -> dict:
    """Every stage file, sane values, the buffer grown by the valid proposals only, MLflow."""
    run = RunDir(root)
    assert run.completed_steps() == list(range(1, iterations + 1))
    assert committed_steps(run.buffer_dir) == list(range(0, iterations + 1))
    for step in range(1, iterations + 1):
        scored = pd.read_parquet(run.stage_path(step, "scored.parquet"))
        assert set(scored["group"]) == set(GROUP_NAMES)
        assert scored["reward"].between(-1.0, 1.0).all()
        for group, mean in advantages_by_group(scored).items():
            assert mean == pytest.approx(0.0, abs=1e-9), (step, group)
        validated = pd.read_parquet(run.stage_path(step, "validated.parquet"))
        for task_type in ("deduction", "abduction", "induction"):
            rows = pd.read_parquet(run.buffer_dir / task_type / f"step_{step:06d}.parquet")
            assert len(rows) == int(validated[(validated["task_type"] == task_type) & validated["valid"]].shape[0])
        assert json.loads(run.stage_path(step, "update.json").read_text())["sequences"] > 0
    info = run.read_info()
    client = mlflow.MlflowClient(info["tracking_uri"])
    mlrun = client.get_run(info["mlflow_run_id"])
    assert mlrun.info.status == "FINISHED"
    history = client.get_metric_history(info["mlflow_run_id"], "overall/reward_mean")
    assert sorted(m.step for m in history) == list(range(1, iterations + 1))  # once per iteration
    assert mlrun.data.params["rollout.batch_size"] == "2"
    assert "azr.version.torch" in mlrun.data.tags
    return info


def test_two_iterations_through_the_flows(tmp_path: Path, prefect_env: dict[str, str]) -> None:
    root = tmp_path / "runs" / "tiny-two"
    fixture = REPO / "tests" / "fixtures" / "eval" / "cruxeval_mini.jsonl"
    evaluation = ["--set", "eval.benchmarks=[cruxeval-o]", "--set", f"eval.data={{cruxeval-o: {fixture}}}",
                  "--set", "eval.limit=3", "--set", "trainer.eval_every=2"]
    output = finish(azr(["train", "--preset", "tiny", "--iterations", "2", "--run-dir", str(root), *evaluation], prefect_env))
    assert "run finished: 2 iterations" in output and "mlflow ui --backend-store-uri" in output
    info = check_consistent_run(root, 2)
    evaluated = mlflow.MlflowClient(info["tracking_uri"]).get_metric_history(info["mlflow_run_id"], "eval/cruxeval_o/accuracy")
    assert [m.step for m in evaluated] == [2]  # evaluated when due, once
    assert info["tracking_uri"] == f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').resolve()}"
    assert (tmp_path / "runs" / "mlartifacts").is_dir()
    shown = finish(azr(["runs", "show", str(root), "--iteration", "1"], prefect_env))
    assert "deduction_propose" in shown
    listed = finish(azr(["runs", "list", str(tmp_path / "runs")], prefect_env))
    assert "2/2" in listed


def start_paused(args: list[str], env: dict[str, str], after: str, mark: Path) -> subprocess.Popen:
    """Start `azr` and wait until it has renamed a file over `after`, where it then sleeps
    (tests/support/killpoint/sitecustomize.py): a kill now hits exactly that point."""
    env = {**env, "PYTHONPATH": os.pathsep.join([str(KILLPOINT), env.get("PYTHONPATH", "")]),
           "AZR_TEST_PAUSE_AFTER": after, "AZR_TEST_PAUSE_MARK": str(mark)}
    process = azr(args, env)
    wait_for(process, mark)
    return process


def wait_for(process: subprocess.Popen, path: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def kill_9(process: subprocess.Popen, *, group: bool = True) -> None:
    if group:
        os.killpg(process.pid, signal.SIGKILL)  # the run and everything it started
    else:
        os.kill(process.pid, signal.SIGKILL)  # the azr process alone: what it started must end too
    process.wait()
    process.stdout.close()


def session_processes(session: int) -> list[str]:
    """Command lines of the live processes in `session` (zombies are dead already)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(state[3]) == session and state[0] != "Z":
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:160])
        except (OSError, IndexError, ValueError):
            continue
    return found


@pytest.mark.timeout(1200)  # four runs of the tiny preset; slow when the machine is shared
def test_kill_9_at_every_point_then_resume(tmp_path: Path, prefect_env: dict[str, str]) -> None:
    """Killed right after a buffer commit, right after metrics.json (nothing logged yet), and in
    the middle of an iteration (the azr process alone, not its group): every resume ends in the
    same state as an uninterrupted run, MLflow has every iteration once, and no process of a
    killed run (Prefect's temporary server, the engine, the sandbox) is left."""
    root = tmp_path / "runs" / "tiny-killed"
    run = RunDir(root)
    process = start_paused(["train", "--preset", "tiny", "--iterations", "3", "--run-dir", str(root)], prefect_env,
                           "iterations/000001/committed.json", tmp_path / "paused-1")
    kill_9(process)
    assert run.iteration_done(1) and not run.stage_path(1, "metrics.json").exists()

    process = start_paused(["train", "--resume", str(root)], prefect_env, "iterations/000002/metrics.json",
                           tmp_path / "paused-2")
    kill_9(process)
    assert json.loads(run.stage_path(1, "metrics.json").read_text())["logged"] is True  # iteration 1 finished first
    assert json.loads(run.stage_path(2, "metrics.json").read_text())["logged"] is False

    process = azr(["train", "--resume", str(root)], prefect_env)
    wait_for(process, run.stage_path(3, "proposals.parquet"))
    kill_9(process, group=False)
    deadline = time.monotonic() + 30
    while (left := session_processes(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes outlived the killed run: {left}"
    assert not run.iteration_done(3)

    output = finish(azr(["train", "--resume", str(root)], prefect_env))
    assert "run finished: 3 iterations" in output
    info = check_consistent_run(root, 3)
    client = mlflow.MlflowClient(info["tracking_uri"])
    mlrun = client.get_run(info["mlflow_run_id"])
    assert sorted(d.dataset.name for d in mlrun.inputs.dataset_inputs) == sorted(set(d.dataset.name for d in mlrun.inputs.dataset_inputs))
    models = client.search_logged_models([mlrun.info.experiment_id], filter_string=f"source_run_id = '{mlrun.info.run_id}'")
    steps = [m.params["step"] for m in models]
    assert "3" in steps and len(steps) == len(set(steps))  # the last checkpoint, each logged model once
    for step in (1, 2, 3):
        assert json.loads(run.stage_path(step, "metrics.json").read_text())["logged"] is True
        files = {a.path for a in client.list_artifacts(info["mlflow_run_id"], f"iterations/{step:06d}")}
        assert f"iterations/{step:06d}/metrics.json" in files, (step, files)


@pytest.mark.timeout(1200)  # three runs; slow when the machine is shared
def test_resume_with_other_settings_is_refused(tmp_path: Path, prefect_env: dict[str, str]) -> None:
    root = tmp_path / "runs" / "tiny-one"
    finish(azr(["train", "--preset", "tiny", "--iterations", "1", "--run-dir", str(root)], prefect_env))
    config = (root / "config.yaml").read_bytes()
    refused = azr(["train", "--resume", str(root), "--set", "rollout.batch_size=3"], prefect_env)
    output, _ = refused.communicate(timeout=300)
    assert refused.returncode == 2 and "--force" in output
    assert "other settings (rollout.batch_size: 2 -> 3);" in output  # over the run's own config, not a preset's
    failed = azr(["train", "--resume", str(root), "--force", "--iterations", "2", "--set", "model.name_or_path=/no/such/model"],
                 prefect_env)
    output, _ = failed.communicate(timeout=600)
    assert failed.returncode == 1 and "error: " in output and "'/no/such/model'" in output
    assert (root / "config.yaml").read_bytes() == config  # the run never started with it: later resumes still work


@pytest.mark.timeout(1800)  # the bundled model: the probe twice and an iteration; the default 300 s ran out on shared cores
def test_one_iteration_on_the_bundled_model(tmp_path: Path, prefect_env: dict[str, str]) -> None:
    root = tmp_path / "runs" / "cpu-one"
    overrides = ["rollout.batch_size=2", "rollout.max_new_tokens=48", "rollout.mc_samples=2", "tasks.references=1"]
    args = ["train", "--preset", "cpu", "--iterations", "1", "--run-dir", str(root)]
    for item in overrides:
        args += ["--set", item]
    output = finish(azr(args, prefect_env), timeout=1500)
    assert "run finished: 1 iterations" in output
    run = RunDir(root)
    proposals = pd.read_parquet(run.stage_path(1, "proposals.parquet"))
    assert proposals["response"].str.len().gt(0).all()  # the real model wrote something
    assert (run.checkpoint_dir / "step-00000001").is_dir()


def test_a_crash_is_one_paragraph_and_marks_the_mlflow_run_failed(tmp_path: Path, prefect_env: dict[str, str]) -> None:
    root = tmp_path / "runs" / "broken"
    process = azr(["train", "--preset", "tiny", "--set", "model.name_or_path=/no/such/model", "--run-dir", str(root)], prefect_env)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 1
    assert "error: " in output and "model '/no/such/model'" in output and "Traceback" not in output
    assert "Still processing items" not in output  # Prefect's queues drain quietly
    info = RunDir(root).read_info()
    assert mlflow.MlflowClient(info["tracking_uri"]).get_run(info["mlflow_run_id"]).info.status == "FAILED"


def interrupt_when(process: subprocess.Popen, log: Path, line: str, sig: signal.Signals, *, group: bool = True) -> str:
    """Send `sig` once the engine log shows `line` (the command is running), as a terminal's
    Ctrl-C (the whole foreground group) or a `kill` (the azr process); the run's output."""
    deadline = time.monotonic() + 600
    while not (log.exists() and line in log.read_text(errors="replace")):
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, f"{line!r} never appeared in {log}"
        time.sleep(0.05)
    (os.killpg if group else os.kill)(process.pid, sig)  # type: ignore[operator]
    output, _ = process.communicate(timeout=300)  # generous: the test does not time anything
    return output


def assert_interrupted(process: subprocess.Popen, output: str, root: Path, code: int) -> None:
    """Stopped by the signal, the last lines say what and how to continue, MLflow says KILLED,
    nothing of the run is left running, no temporary file is left behind."""
    assert process.returncode == code, output[-3000:]
    tail = " ".join(output.strip().splitlines()[-3:])
    assert "interrupted (" in tail and f"continue with: azr train --resume {root}" in " ".join(tail.split()), output[-2000:]
    assert "Traceback" not in output
    info = RunDir(root).read_info()
    assert mlflow.MlflowClient(info["tracking_uri"]).get_run(info["mlflow_run_id"]).info.status == "KILLED"
    deadline = time.monotonic() + 30
    while (left := session_processes(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes outlived the interrupted run: {left}"
    assert not [p for p in root.rglob("*.tmp") if p.is_file()], "a half-written file was left"


@pytest.mark.timeout(2400)  # five runs of the tiny preset; slow when the machine is shared
def test_interrupts_stop_the_run_and_resume_finishes_as_uninterrupted(tmp_path: Path, prefect_env: dict[str, str]) -> None:
    """Ctrl-C during generation, SIGTERM during the update, Ctrl-C while a checkpoint is being
    written (the rank paused there: it is killed after the grace period): each stops the run
    with the resume command as its last line, and the resumed run ends as an uninterrupted one."""
    reference = tmp_path / "runs" / "tiny-reference"
    finish(azr(["train", "--preset", "tiny", "--iterations", "2", "--run-dir", str(reference)], prefect_env))
    root = tmp_path / "runs" / "tiny-interrupted"
    log = root / "engine" / "engine.log"

    process = azr(["train", "--preset", "tiny", "--iterations", "2", "--run-dir", str(root)], prefect_env)
    output = interrupt_when(process, log, "command generate started", signal.SIGINT)
    assert_interrupted(process, output, root, 130)  # stopped after a token, or killed after the grace period

    log.unlink()
    process = azr(["train", "--resume", str(root)], prefect_env)
    output = interrupt_when(process, log, "command update started", signal.SIGTERM, group=False)
    assert_interrupted(process, output, root, 143)

    pause = tmp_path / "paused-save"
    process = start_paused(["train", "--resume", str(root)], prefect_env, ".tmp-step-00000001/meta.json", pause)
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=300)
    assert_interrupted(process, output, root, 130)
    assert not (root / "checkpoints" / "step-00000001").exists()  # the torn save is no checkpoint

    output = finish(azr(["train", "--resume", str(root)], prefect_env))
    assert "run finished: 2 iterations" in output
    check_consistent_run_after_interrupts(root, reference)


def check_consistent_run_after_interrupts(root: Path, reference: Path) -> None:
    """The same stage files and updates as the uninterrupted run (the stages are seeded)."""
    run, expected = RunDir(root), RunDir(reference)
    assert run.completed_steps() == expected.completed_steps() == [1, 2]
    for step in (1, 2):
        for name in ("proposals.parquet", "validated.parquet", "scored.parquet"):
            got = pd.read_parquet(run.stage_path(step, name))
            want = pd.read_parquet(expected.stage_path(step, name))
            pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-6)
        loss = json.loads(run.stage_path(step, "update.json").read_text())["loss"]
        assert loss == pytest.approx(json.loads(expected.stage_path(step, "update.json").read_text())["loss"], rel=1e-5)
    from safetensors.torch import load_file

    name = "step-00000002/export/model.safetensors"
    ours, theirs = load_file(run.checkpoint_dir / name), load_file(expected.checkpoint_dir / name)
    assert ours.keys() == theirs.keys() and all(ours[k].equal(theirs[k]) for k in theirs)
    info = run.read_info()
    assert mlflow.MlflowClient(info["tracking_uri"]).get_run(info["mlflow_run_id"]).info.status == "FINISHED"
