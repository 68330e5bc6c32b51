"""The engine as a process group apart from the controller, for real: `azr train` through the
Prefect flows with 2 gloo ranks (its update equals the in-process one), a rank SIGKILLed in
the middle of an update (one clear error, nothing left running, `--resume` finishes), and two
launchers on 127.0.0.1 as two machines of one engine. Tiny model, small batches."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import mlflow
import pytest

from azr.engine.controller.launch import SERVICE_MODULE, engine_dir
from azr.engine.rollout.vllm.server import free_port
from azr.pipeline.run_dir import RunDir
from tests.e2e.test_pipeline_flows import azr, check_consistent_run, finish, prefect_env  # noqa: F401 - a fixture

pytestmark = pytest.mark.timeout(1200)  # several real runs each; slow when the machine is shared
TWO_RANKS = ["--set", "trainer.processes=2", "--set", "trainer.strategy=ddp"]


def engine_processes(root: Path) -> list[int]:
    """Pids of live processes started for this run's engine (launchers and ranks)."""
    marker = str(root.resolve()).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline and (SERVICE_MODULE.encode() in cmdline or b"accelerate" in cmdline):
                found.append(int(entry.name))
    return found


def wait_for(condition, what: str, process, timeout: float = 600) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_through_the_flows_equal_the_in_process_update(tmp_path: Path, prefect_env: dict[str, str],
                                                                   strategy: str) -> None:
    root = tmp_path / "runs" / f"tiny-{strategy}"
    layout = ["--set", "trainer.processes=2", "--set", f"trainer.strategy={strategy}"]
    output = finish(azr(["train", "--preset", "tiny", "--iterations", "2", "--run-dir", str(root), *layout], prefect_env))
    assert "run finished: 2 iterations" in output
    info = check_consistent_run(root, 2)
    run = RunDir(root)
    update = json.loads(run.stage_path(1, "update.json").read_text())
    assert (update["world_size"], update["strategy"]) == (2, strategy)
    ranks = json.loads((engine_dir(root) / "ranks.json").read_text())["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and len({r["pid"] for r in ranks}) == 2
    mlrun = mlflow.MlflowClient(info["tracking_uri"]).get_run(info["mlflow_run_id"])
    assert mlrun.data.tags["azr.engine.world_size"] == "2" and mlrun.data.tags["azr.engine.strategy"] == strategy
    assert mlrun.data.metrics["update/world_size"] == 2.0
    assert engine_processes(root) == []

    # The same first update, in this process on one rank, from the same initial weights.
    from azr.engine.rank.policy import Policy

    single = run.read_config().model_copy(deep=True)
    single.trainer.processes, single.trainer.strategy = 1, "ddp"
    policy = Policy.create(single, cpu=True)
    alone = policy.update_scored(run.stage_path(1, "scored.parquet"))
    for key in ("loss", "pg_loss", "entropy", "grad_norm"):
        assert update[key] == pytest.approx(alone[key], rel=1e-4, abs=1e-6), key


def test_a_rank_killed_during_an_update_is_one_error_and_resume_finishes(tmp_path: Path, prefect_env: dict[str, str]) -> None:
    root = tmp_path / "runs" / "tiny-dead-rank"
    env = {**prefect_env}
    args = ["train", "--preset", "tiny", "--iterations", "1", "--run-dir", str(root), *TWO_RANKS,
            "--set", "engine.update_timeout_s=120"]
    process = azr(args, env)
    run = RunDir(root)
    ranks_file = engine_dir(root) / "ranks.json"
    wait_for(lambda: run.stage_path(1, "scored.parquet").exists() and ranks_file.exists(), "no update", process)
    victim = next(r["pid"] for r in json.loads(ranks_file.read_text())["ranks"] if r["rank"] == 1)
    os.kill(victim, signal.SIGSTOP)  # hold rank 1 until the update command has reached rank 0
    log = engine_dir(root) / "engine.log"
    wait_for(lambda: "command update started" in log.read_text(errors="replace"), "update never sent", process)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    output, _ = process.communicate(timeout=300)
    assert time.monotonic() - killed_at < 120  # well within engine.update_timeout_s
    assert process.returncode == 1, output[-3000:]
    assert "the engine stopped" in output and "during `update`" in output and "Traceback (most recent" not in output
    assert "azr train --resume" in output
    assert not run.stage_path(1, "update.json").exists()
    info = run.read_info()
    assert mlflow.MlflowClient(info["tracking_uri"]).get_run(info["mlflow_run_id"]).info.status == "FAILED"
    deadline = time.monotonic() + 30
    while engine_processes(root) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert engine_processes(root) == []

    output = finish(azr(["train", "--resume", str(root)], prefect_env))
    assert "run finished: 1 iterations" in output
    check_consistent_run(root, 1)


def test_two_launchers_on_one_host_are_two_machines_of_one_engine(tmp_path: Path, prefect_env: dict[str, str]) -> None:
    root = tmp_path / "runs" / "tiny-two-machines"
    port = free_port("127.0.0.1")
    machines = ["--set", "trainer.processes=2", "--set", "engine.num_machines=2",
                "--set", "engine.main_process_ip=127.0.0.1", "--set", f"engine.main_process_port={port}"]
    controller = azr(["train", "--preset", "tiny", "--iterations", "1", "--run-dir", str(root), *machines], prefect_env)
    second = azr(["engine", "launch", "--run-dir", str(root), "--machine-rank", "1", "--wait-s", "300"], prefect_env)
    try:
        output = finish(controller)
        assert "run finished: 1 iterations" in output
        second_output, _ = second.communicate(timeout=120)
        assert second.returncode == 0, second_output[-3000:]
    finally:
        for process in (controller, second):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    check_consistent_run(root, 1)
    update = json.loads(RunDir(root).stage_path(1, "update.json").read_text())
    assert update["world_size"] == 2
    hosts = json.loads((engine_dir(root) / "ranks.json").read_text())["ranks"]
    assert [r["rank"] for r in hosts] == [0, 1]


def test_azr_engine_launch_refuses_a_machine_rank_the_run_does_not_have(tmp_path: Path, prefect_env: dict[str, str]) -> None:
    missing = azr(["engine", "launch", "--run-dir", str(tmp_path), "--machine-rank", "1", "--wait-s", "0"], prefect_env)
    output, _ = missing.communicate(timeout=120)
    assert missing.returncode == 1 and "start the run (machine 0) first" in output
