"""The in-process iteration (azr/selfplay/iteration.py) really runs: a scripted policy, the real
sandbox executor, and the rewards and TRR++ advantages it returns are those of the algorithm
(the same figures tests/integration/test_pipeline_stages.py checks on the stage files)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from azr.config.loading import build_config
from azr.pipeline.registry import MC_ROLLOUTS, PROPOSE, SOLVE
from azr.sandbox import SandboxExecutor
from azr.selfplay.buffer import Buffers
from azr.selfplay.iteration import Sample, run_iteration, stage_seed
from azr.selfplay.prompts.chat_format import R1Wrapper
from tests.support.fakes import WRONG_ANSWER, scripted_answer

CONFIG = build_config("tiny", overrides=["trainer.iterations=1", "rollout.mc_samples=4", "sandbox.timeout_s=3"])


@pytest.fixture(scope="module")
def executor() -> Iterator[SandboxExecutor]:
    with SandboxExecutor.from_run_config(CONFIG) as ex:
        yield ex


class ScriptedPolicy:
    """Answers by what the prompt asks for: a valid deduction proposal, a broken abduction one,
    the right answer to the identity seed task; every second sample answers `0`."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, float, int]] = []

    _answer = staticmethod(scripted_answer)

    def sample(self, prompts: Sequence[str], n: int, temperature: float, seed: int) -> list[list[Sample]]:
        self.calls.append((len(prompts), n, temperature, seed))
        texts = [[self._answer(p) if k % 2 == 0 else WRONG_ANSWER
                  for k in range(n)] for p in prompts]
        return [[Sample(text, len(text.split())) for text in per_prompt] for per_prompt in texts]


def test_one_iteration_in_process(executor: SandboxExecutor) -> None:
    buffers = Buffers.initial(CONFIG.buffer, seed=CONFIG.seed)
    policy = ScriptedPolicy()
    scored = run_iteration(buffers, 1, CONFIG, policy, executor, R1Wrapper(), lambda text: len(text.split()))

    by_group: dict[str, list] = {}
    for response in scored:
        by_group.setdefault(response.group, []).append(response)
    assert set(by_group) == {f"{t}_{r}" for t in ("abduction", "deduction", "induction") for r in ("propose", "solve")}
    assert all(-1.0 <= r.reward <= 1.0 for r in scored)
    assert [r.reward for r in by_group["deduction_propose"]] == [0.5] * len(by_group["deduction_propose"])  # 1 - 0.5
    assert [r.reward for r in by_group["abduction_propose"]] == [-1.0] * len(by_group["abduction_propose"])
    assert [r.reward for r in by_group["deduction_solve"]] == [1.0] * len(by_group["deduction_solve"])
    for group, responses in by_group.items():  # whitened within each group: token-weighted mean 0
        weights = [r.response.tokens for r in responses if r.trained]
        mean = np.average([r.advantage for r in responses if r.trained], weights=weights)
        assert mean == pytest.approx(0.0, abs=1e-9), group
        ranked = sorted((r for r in responses if r.trained), key=lambda r: r.reward)  # a better reward, a larger advantage
        assert [r.advantage for r in ranked] == sorted(r.advantage for r in ranked), group
    assert [r.advantage for r in by_group["deduction_propose"]] == [0.0] * len(by_group["deduction_propose"])  # equal rewards
    # the buffers grew by exactly the valid proposals: the deduction ones
    assert len(buffers["deduction"]) == 1 + len(by_group["deduction_propose"])
    assert len(buffers["abduction"]) == 1 and buffers.step == 1
    # propose, one Monte-Carlo batch per task type with valid tasks, solve; n samples only for Monte-Carlo
    assert [n for _, n, _, _ in policy.calls] == [1] + [CONFIG.rollout.mc_samples] * (len(policy.calls) - 2) + [1]
    # with the pipeline's seeds (azr/pipeline/stages.py), so both sample the same
    seeds = [seed for *_, seed in policy.calls]
    assert seeds[0] == stage_seed(CONFIG.seed, 1, PROPOSE.name) and seeds[-1] == stage_seed(CONFIG.seed, 1, SOLVE.name)
    assert seeds[1] == stage_seed(CONFIG.seed, 1, f"{MC_ROLLOUTS.name}:deduction")
