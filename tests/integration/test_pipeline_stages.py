"""The stage functions on the real tiny policy and the real sandbox, called directly.

One test scripts the generation backend (a fake allowed here: it tests the stage logic around
generation) so that some proposals are valid and some answers right; the others use the real
tiny model end to end, including an interrupted run resumed from its files.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from azr.pipeline.buffer_log import committed_steps
from azr.config.loading import ConfigError, build_config
from azr.engine.api import Completion, GenerationRequest, SamplingSettings
from azr.engine.rollout.transformers_backend import SharedWeightsBackend
from azr.engine.rank.policy import Policy
from azr.pipeline.run_dir import RunDirError, open_run_dir
from azr.pipeline.stages import STAGE_FUNCTIONS, advantages_by_group, run_iteration
from azr.pipeline.run import close_resources, finish_iteration, open_resources
from azr.sandbox import SandboxExecutor
from azr.pipeline.schemas import MC_ROLLOUTS_SCHEMA, PROPOSALS_SCHEMA, SCORED_SCHEMA, SOLUTIONS_SCHEMA, VALIDATED_SCHEMA
from tests.support.fakes import WRONG_ANSWER, scripted_answer

CONFIG = build_config("tiny", overrides=["trainer.iterations=2", "sandbox.timeout_s=3"])


@pytest.fixture(scope="module")
def executor() -> Iterator[SandboxExecutor]:
    with SandboxExecutor.from_run_config(CONFIG) as ex:
        yield ex


class ScriptedBackend(SharedWeightsBackend):
    """Answers by what the prompt asks for: a valid deduction proposal, a broken abduction
    one, and a right answer for the identity seed task."""

    def __init__(self, tokenizer) -> None:  # noqa: ANN001
        self.tokenizer = tokenizer

    _answer = staticmethod(scripted_answer)

    def generate(self, prompts: Sequence[str], settings: SamplingSettings) -> list[list[Completion]]:
        results = []
        for prompt in prompts:
            prompt_ids = tuple(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
            samples = []
            for k in range(settings.n):
                text = self._answer(prompt) if k % 2 == 0 else WRONG_ANSWER
                ids = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
                samples.append(Completion(text, ids, prompt_ids, "stop"))
            results.append(samples)
        return results

    def generate_many(self, requests: Sequence[GenerationRequest]) -> list[list[list[Completion]]]:
        return [self.generate(r.prompts, r.settings) for r in requests]


def test_stages_with_scripted_answers(tmp_path: Path, executor: SandboxExecutor) -> None:
    config = build_config("tiny", overrides=["trainer.iterations=1", "rollout.mc_samples=4"])
    policy = Policy.create(config, cpu=True)
    policy.backend = ScriptedBackend(policy.tokenizer)
    run, config = open_run_dir(tmp_path / "run", config, resume=False)
    res = open_resources(run, config, policy=policy, executor=executor)
    run_iteration(res, 1)
    read = lambda name: pd.read_parquet(run.stage_path(1, name))  # noqa: E731

    validated = read("validated.parquet")
    deduction = validated[validated["group"] == "deduction_propose"]
    assert deduction["valid"].all() and (deduction["output"] == "[1, 4]").all()
    assert not validated[validated["group"] == "abduction_propose"]["valid"].any()
    rollouts = read("mc_rollouts.parquet")
    assert set(rollouts["solve_rate"]) == {0.5}  # half the samples answer right
    scored = read("scored.parquet")
    assert set(scored["group"]) == {f"{t}_{r}" for t in ("abduction", "deduction", "induction") for r in ("propose", "solve")}
    assert scored["reward"].between(-1, 1).all()
    assert (scored[scored["group"] == "deduction_propose"]["reward"] == 0.5).all()  # learnability 1 - 0.5
    assert (scored[scored["group"] == "abduction_propose"]["reward"] == -1.0).all()
    assert (scored[scored["group"] == "deduction_solve"]["reward"] == 1.0).all()
    for group, mean in advantages_by_group(scored).items():
        assert mean == pytest.approx(0.0, abs=1e-9), group
    # the buffer grew by exactly the valid proposals
    assert len(res.buffers["deduction"]) == 1 + len(deduction)
    assert len(res.buffers["abduction"]) == 1 and len(res.buffers["induction"]) == 1 + int(
        validated[validated["group"] == "induction_propose"]["valid"].sum())
    metrics = finish_iteration(res, 1)
    assert metrics["deduction_propose/valid_rate"] == 1.0 and metrics["deduction_propose/solve_rate_mean"] == 0.5
    assert metrics["deduction_solve/accuracy"] == 1.0 and "update/loss" in metrics
    close_resources(res)


def test_schemas_of_every_stage_file(tmp_path: Path, executor: SandboxExecutor) -> None:
    run, config = open_run_dir(tmp_path / "run", CONFIG, resume=False)
    res = open_resources(run, config, executor=executor)
    run_iteration(res, 1)
    schemas = {"proposals.parquet": PROPOSALS_SCHEMA, "validated.parquet": VALIDATED_SCHEMA,
               "mc_rollouts.parquet": MC_ROLLOUTS_SCHEMA, "solutions.parquet": SOLUTIONS_SCHEMA,
               "scored.parquet": SCORED_SCHEMA}
    import pyarrow.parquet as pq

    for name, schema in schemas.items():
        assert pq.read_schema(run.stage_path(1, name)).equals(schema), name
    assert run.iteration_done(1)
    assert committed_steps(run.buffer_dir) == [0, 1]
    # the engine recorded the behaviour log-probs of every sampled token, and the update
    # measured the gap against its own (same weights: lag 0, only numerics; docs/algorithm.md §14)
    for name in ("proposals.parquet", "solutions.parquet", "scored.parquet"):
        frame = pd.read_parquet(run.stage_path(1, name))
        assert (frame["behaviour_logprobs"].map(len) == frame["response_tokens"]).all(), name
        assert (frame["policy_version"] == 0).all(), name
    gap = run.read_json(1, "update.json")["off_policy"]
    assert gap["policy_lag"] == 0 and gap["behaviour_coverage"] == 1.0
    assert 0 <= gap["mismatch_mean"] < 0.05 and gap["ratio_p01"] <= 1 <= gap["ratio_p99"], gap
    metrics = finish_iteration(res, 1)
    assert metrics["off_policy/mismatch_mean"] == gap["mismatch_mean"] and metrics["off_policy/policy_lag"] == 0
    close_resources(res)  # the engine process group this run started


def _parameters(policy: Policy) -> list[torch.Tensor]:
    return [p.detach().clone() for p in policy.unwrapped_model.parameters()]


def test_an_interrupted_run_resumes_to_the_same_state(tmp_path: Path, executor: SandboxExecutor) -> None:
    """Run 2 iterations straight; separately, stop after iteration 2's rewards with no
    checkpoint of iteration 1, then resume from the files: same files, same weights.
    (In-process policies, to compare their weights; the engine process's resume is in
    tests/integration/test_engine_process.py.)"""
    config = build_config("tiny", overrides=["trainer.iterations=2", "trainer.checkpoint_every=5", "sandbox.timeout_s=3"])
    straight, config = open_run_dir(tmp_path / "straight", config, resume=False)
    res = open_resources(straight, config, executor=executor, policy=Policy.create(config, cpu=True))  # weights compared in process
    for step in (1, 2):
        run_iteration(res, step)
    final_straight = _parameters(res.policy)

    broken, _ = open_run_dir(tmp_path / "broken", config, resume=False)
    res = open_resources(broken, config, executor=executor, policy=Policy.create(config, cpu=True))  # weights compared in process
    run_iteration(res, 1)
    for name, stage in STAGE_FUNCTIONS[:6]:  # up to rewards of iteration 2, then "killed"
        stage(res, 2)
    shutil.rmtree(broken.checkpoint_dir, ignore_errors=True)  # iteration 1 was never checkpointed

    resumed, resumed_config = open_run_dir(tmp_path / "broken", None, resume=True)
    res = open_resources(resumed, resumed_config, executor=executor, policy=Policy.create(config, cpu=True))  # weights compared in process
    assert res.replayed == [1]  # iteration 1's update replayed from its scored.parquet
    run_iteration(res, 2)
    for name in ("proposals.parquet", "scored.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(straight.stage_path(2, name)), pd.read_parquet(broken.stage_path(2, name)))
    for a, b in zip(final_straight, _parameters(res.policy)):
        torch.testing.assert_close(a, b)
    assert committed_steps(broken.buffer_dir) == [0, 1, 2]
    rows = [len(pd.read_parquet(p)) for p in sorted((broken.buffer_dir / "deduction").glob("*.parquet"))]
    assert rows == [1, *[int(np.sum(pd.read_parquet(broken.stage_path(s, "validated.parquet")).query("task_type == 'deduction'")["valid"])) for s in (1, 2)]]


def test_resume_refuses_changed_settings(tmp_path: Path) -> None:
    run, _ = open_run_dir(tmp_path / "run", CONFIG, resume=False)
    changed = build_config("tiny", overrides=["rollout.batch_size=3"])
    with pytest.raises(ConfigError, match="rollout.batch_size: 2 -> 3"):
        open_run_dir(run.root, changed, resume=True)
    _, forced = open_run_dir(run.root, changed, resume=True, force=True)
    assert forced.rollout.batch_size == 3
    with pytest.raises(RunDirError, match="already exists and is not empty"):
        open_run_dir(run.root, CONFIG, resume=False)
    with pytest.raises(RunDirError, match="no config.yaml"):
        open_run_dir(tmp_path / "nothing", None, resume=True)
