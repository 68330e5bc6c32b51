"""`evaluate_policy`, the in-training evaluation: metrics from a scripted policy whose answers we
know, and a real resident policy (tiny random model) through its own generation backend."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from azr.config.loading import build_config
from azr.engine.api import Completion, SamplingSettings
from azr.eval.benchmarks.registry import get_benchmark
from azr.eval.in_training import evaluate_policy
from azr.eval.prompting.azr_prompts import build_prompt
from azr.eval.scoring.stats import wilson_interval
from azr.sandbox import SandboxExecutor
from azr.selfplay.task_types import TaskType
from azr.selfplay.prompts.chat_format import R1Wrapper

FIXTURE = Path(__file__).parents[1] / "fixtures" / "eval" / "cruxeval_mini.jsonl"
CONFIG = build_config("tiny")


@pytest.fixture(scope="module")
def executor() -> Iterator[SandboxExecutor]:
    with SandboxExecutor.from_run_config(CONFIG) as ex:  # the training run's executor, banned imports and all
        yield ex


class ScriptedPolicy:
    """Answers each known prompt with a prepared response; records the sampling settings."""

    def __init__(self, responses: dict[str, str]) -> None:
        self.responses = responses
        self.settings: list[SamplingSettings] = []

    def generate(self, prompts: Sequence[str], settings: SamplingSettings) -> list[list[Completion]]:
        self.settings.append(settings)
        return [[Completion(self.responses[p], (1, 2, 3), (4,), "stop")] for p in prompts]


def answer(tag: str, value: str) -> str:
    return f" I traced the code. </think>\n<answer>```{tag}\n{value}\n```</answer>"


def test_metrics_of_a_policy_with_known_answers(executor: SandboxExecutor, tmp_path: Path) -> None:
    responses: dict[str, str] = {}
    for name in ("cruxeval-o", "cruxeval-i"):
        for index, problem in enumerate(get_benchmark(name).load(str(FIXTURE), limit=5)):
            prompt = build_prompt(problem, "azr", R1Wrapper())
            if problem.task is TaskType.DEDUCTION:  # type: ignore[union-attr]
                responses[prompt] = answer("output", problem.output if index < 3 else "'nope'")  # type: ignore[union-attr]
            else:
                responses[prompt] = answer("input", problem.input)  # type: ignore[union-attr]
    policy = ScriptedPolicy(responses)
    metrics = evaluate_policy(
        policy, CONFIG, [("cruxeval-o", FIXTURE), ("cruxeval_i", str(FIXTURE))], 5, executor,
        max_new_tokens=32, out_dir=tmp_path,
    )
    low, high = wilson_interval(3, 5)
    assert metrics["eval/cruxeval_o/accuracy"] == pytest.approx(0.6)
    assert (metrics["eval/cruxeval_o/ci95_low"], metrics["eval/cruxeval_o/ci95_high"]) == pytest.approx((low, high))
    assert metrics["eval/cruxeval_i/accuracy"] == 1.0 and metrics["eval/cruxeval_i/problems"] == 5
    assert metrics["eval/cruxeval_o/format_rate"] == 1.0
    assert {(s.temperature, s.max_new_tokens, s.n) for s in policy.settings} == {(0.0, 32, 1)}
    rows = pd.read_parquet(tmp_path / "eval_cruxeval_o.parquet")
    assert list(rows["correct"]) == [True, True, True, False, False]


def test_the_resident_policy_evaluates_itself(executor: SandboxExecutor, tokenizer: Any, fresh_accelerate: None) -> None:
    from azr.engine.rank.policy import Policy

    policy = Policy.create(CONFIG, cpu=True)
    metrics = evaluate_policy(policy, CONFIG, [("cruxeval-o", str(FIXTURE))], 2, executor, max_new_tokens=3)
    assert metrics["eval/cruxeval_o/problems"] == 2
    assert 0.0 <= metrics["eval/cruxeval_o/accuracy"] <= 1.0
    assert metrics["eval/cruxeval_o/response_tokens_mean"] <= 3
