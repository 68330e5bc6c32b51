"""The seeding stage (docs/algorithm.md §8.2, §8.4) on the tiny policy with scripted proposals and the
real sandbox: it fills the pools to batch_size x seed_batch_factor, resumes after kill -9 to the
same pools, logs its files to MLflow, is skipped by seed files, and an under-seeded paper run
is refused before its model loads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from azr.pipeline.buffer_log import committed_steps, load_buffer_log
from azr.config.loading import build_config
from azr.pipeline.run_dir import RunDir, open_run_dir
from azr.pipeline.seeding import (
    INDUCTION_SEED_FILE,
    IO_SEED_FILE,
    UnderSeededError,
    seeding_dir,
    seeding_needed,
    seeding_target,
)
from azr.pipeline.run import load_buffers, open_resources
from azr.selfplay.seed_tasks import IDENTITY_PROGRAM
from azr.selfplay.task_types import TaskType

from tests.support.seeding_script import seed_run, seeding_config

REPO = Path(__file__).resolve().parents[2]


def pools(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    directory = seeding_dir(RunDir(root))
    return pd.read_parquet(directory / IO_SEED_FILE), pd.read_parquet(directory / INDUCTION_SEED_FILE)


def test_seeding_fills_the_buffers_and_logs_its_files(tmp_path: Path, bundled_copy: Path) -> None:
    root = tmp_path / "runs" / "seeded"
    summary = seed_run(root, bundled_copy, tracker=True)
    target = seeding_target(seeding_config())
    assert target == 6 and summary["io"]["size"] == 6 and summary["induction"]["size"] == 6
    assert summary["io"]["valid"] < summary["io"]["proposed"]  # every third scripted proposal is broken
    io, induction = pools(root)
    assert len(io) == len(induction) == target
    assert io["program"].iloc[0] == IDENTITY_PROGRAM  # the pool grows from the identity triplet
    assert io[["program", "input", "output"]].duplicated().sum() == 0  # deduplicated
    for program in io["program"].iloc[1:]:  # seeding parse options: renamed, no comment, no top-level code
        assert program.startswith("def f(x):") and "#" not in program and "print" not in program
    assert all(len(inputs) in (6, 4) for inputs in induction["inputs"])  # the identity problem, then proposals
    run = RunDir(root)
    assert committed_steps(run.buffer_dir) == [0]
    buffers = load_buffer_log(run.buffer_dir, seeding_config().buffer)
    assert len(buffers[TaskType.DEDUCTION]) == len(buffers[TaskType.ABDUCTION]) == len(buffers[TaskType.INDUCTION]) == 6
    info = run.read_info()
    client = mlflow.MlflowClient(info["tracking_uri"])
    logged = {a.path for a in client.list_artifacts(info["mlflow_run_id"], "seeding")}
    assert {"seeding/seed_io.parquet", "seeding/seed_induction.parquet", "seeding/seeding.json"} <= logged
    history = client.get_metric_history(info["mlflow_run_id"], "seeding/io_pool")
    assert history and history[-1].value == 6
    assert not seeding_needed(run, seeding_config())  # done: a resumed run does not seed again


def test_seeding_resumes_after_kill_9_to_the_same_pools(tmp_path: Path, bundled_copy: Path) -> None:
    killed = tmp_path / "killed"
    script = [sys.executable, str(REPO / "tests" / "support" / "seeding_script.py"), str(killed), str(bundled_copy), "0.5"]
    process = subprocess.Popen(script,
                               cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    marker = seeding_dir(RunDir(killed)) / "io_0001_validated.parquet"
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "seeding never got to its second batch"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (seeding_dir(RunDir(killed)) / IO_SEED_FILE).exists()
    assert committed_steps(RunDir(killed).buffer_dir) == []

    seed_run(killed, bundled_copy)  # resume: the batches on disk are kept, the rest generated
    seed_run(tmp_path / "whole", bundled_copy)
    for resumed, whole in zip(pools(killed), pools(tmp_path / "whole")):
        pd.testing.assert_frame_equal(resumed, whole)
    assert not list(seeding_dir(RunDir(killed)).glob("*.tmp*"))  # no half-written file left


def test_seed_files_skip_seeding(tmp_path: Path, bundled_copy: Path) -> None:
    source = tmp_path / "source"
    seed_run(source, bundled_copy)
    io_file, induction_file = (seeding_dir(RunDir(source)) / name for name in (IO_SEED_FILE, INDUCTION_SEED_FILE))
    config = seeding_config(f"buffer.seed_io_file={io_file}", f"buffer.seed_induction_file={induction_file}")
    run, config = open_run_dir(tmp_path / "from-files", config, resume=False)
    assert not seeding_needed(run, config)
    buffers = load_buffers(run, config)  # the run's initial buffers, straight from the files
    assert buffers is not None and len(buffers[TaskType.INDUCTION]) == 6
    assert not seeding_dir(run).exists()


@pytest.mark.parametrize(("preset", "target"), [("qwen2.5-coder-7b", 256), ("qwen2.5-7b", 256), ("llama-3.1-8b", 64)])
def test_paper_presets_start_seeded_and_refuse_small_buffers(tmp_path: Path, preset: str, target: int) -> None:
    config = build_config(preset)
    assert config.buffer.seeding == "model" and not config.buffer.allow_small_buffers
    assert seeding_target(config) == target
    unseeded = build_config(preset, overrides=["buffer.seeding=none"])
    run, unseeded = open_run_dir(tmp_path / preset, unseeded, resume=False)
    with pytest.raises(UnderSeededError, match="rollout.batch_size=64"):
        open_resources(run, unseeded)  # refused before the model would load
    assert committed_steps(run.buffer_dir) == []


def test_the_laptop_presets_may_start_small() -> None:
    for preset in ("cpu", "tiny"):
        config = build_config(preset)
        assert config.buffer.allow_small_buffers and config.buffer.seeding == "none"
