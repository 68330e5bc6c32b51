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

    @staticmethod
    def _answer(prompt: str) -> str:
        if "Write a New Python Code Snippet" in prompt and "predict your input" in prompt:  # deduction propose
            body = "```python\ndef f(xs):\n    return sorted(xs)[:2]\n```\n```input\n[5, 1, 4]\n```"
        elif "Write a New Python Code Snippet" in prompt:  # abduction propose
            body = "no code here"
        elif "```input\n'Hello world'\n```" in prompt and "Output of a Python" in prompt:  # deduction solve
            body = "```output\n'Hello world'\n```"
        elif "[5, 1, 4]" in prompt:  # Monte-Carlo solve of the new deduction task
            body = "```output\n[1, 4]\n```"
        else:
            body = "I am not sure."
        return f" let me think </think>\n<answer>{body}</answer>"

    def sample(self, prompts: Sequence[str], n: int, temperature: float, seed: int) -> list[list[Sample]]:
        self.calls.append((len(prompts), n, temperature, seed))
        texts = [[self._answer(p) if k % 2 == 0 else " hmm </think><answer>```output\n0\n```</answer>"
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
