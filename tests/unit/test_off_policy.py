"""The off-policy gap (docs/algorithm.md §14): the transformers backend records the trainer's
log-probs of what it sampled, the update measures the gap against them, and corrects it with
the ratio against the behaviour log-probs or with truncated importance weights."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from azr.engine import protocol
from azr.engine.models.loading import tiny_model
from azr.engine.api import Completion, GenerationRequest, SamplingSettings, TrainSequence
from azr.engine.rollout.transformers_backend import TransformersBackend
from azr.engine.training.off_policy import GapRecorder, gap_metrics, truncated_is_weights
from azr.engine.training.trrpp_update import TRRPPUpdate, UpdateSettings

PROMPTS = ["def f(a):\n    return a", "Hi", "x = [1, 2, 3]"]


def _updater(model: Any, settings: UpdateSettings) -> TRRPPUpdate:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    return TRRPPUpdate(model, optimizer, accelerator, settings)


def _trainer_logprobs(model: Any, prompt: tuple[int, ...], response: tuple[int, ...]) -> np.ndarray:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([list(prompt) + list(response)])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    start = len(prompt) - 1
    return np.array([float(logp[start + i, t]) for i, t in enumerate(response)])


@pytest.mark.usefixtures("fresh_accelerate")
def test_the_backend_records_the_trainers_logprobs_of_what_it_sampled(tokenizer: Any) -> None:
    """Sampled (tempered, top-k: the record is still the raw distribution's), greedy, and rows
    with a shorter limit than their call's: every token's record is the trainer's log-prob."""
    model = tiny_model(0, tokenizer=tokenizer)
    backend = TransformersBackend(model, tokenizer)
    requests = [
        GenerationRequest(tuple(PROMPTS), SamplingSettings(max_new_tokens=12, temperature=0.7, top_k=50, n=2, seed=3)),
        GenerationRequest(tuple(PROMPTS[:2]), SamplingSettings(max_new_tokens=5, temperature=0.0)),
    ]
    results = backend.generate_many(requests)
    checked = 0
    for request in results:
        for samples in request:
            for completion in samples:
                assert completion.logprobs is not None and len(completion.logprobs) == len(completion.token_ids)
                expected = _trainer_logprobs(model, completion.prompt_token_ids, completion.token_ids)
                np.testing.assert_allclose(completion.logprobs, expected, atol=2e-4)
                checked += len(expected)
    assert checked > 30
    tempered = results[0][0][0]
    assert any(lp < -1.0 for lp in tempered.logprobs), "a random model's samples are not all near-certain"


def test_completions_carry_their_logprobs_through_the_engine_protocol(tmp_path: Path) -> None:
    completions = [[Completion("a", (5, 2), (1,), "stop", (-0.25, -1.5))], [Completion("b", (7,), (1,), "length")]]
    protocol.write_completions(tmp_path / "c.parquet", completions)
    back = protocol.read_completions(tmp_path / "c.parquet", 2)
    assert back[0][0].logprobs == (-0.25, -1.5) and back[1][0].logprobs is None
    assert back == completions


def test_gap_metrics_of_known_log_ratios() -> None:
    recorder = GapRecorder()
    logp = torch.tensor([-1.0, -2.0, -0.5, -3.0])
    behaviour = torch.tensor([-1.1, -1.6, float("nan"), -3.0])
    recorder.add(logp, behaviour)
    metrics = gap_metrics([recorder.local()])
    assert metrics["behaviour_coverage"] == pytest.approx(0.75)
    assert metrics["mismatch_mean"] == pytest.approx((0.1 + 0.4 + 0.0) / 3, abs=1e-6)
    assert metrics["mismatch_max"] == pytest.approx(0.4, abs=1e-6)
    assert metrics["ratio_p50"] == pytest.approx(1.0)  # log-ratios 0.1, -0.4, 0.0
    assert metrics["ratio_p01"] < 1.0 < metrics["ratio_p99"]
    assert gap_metrics([GapRecorder().local()]) == {}, "no tokens: nothing to tell"
    nothing = GapRecorder()
    nothing.add(logp, torch.full((4,), float("nan")))
    assert gap_metrics([nothing.local()]) == {"behaviour_coverage": 0.0}


def test_truncated_importance_weights() -> None:
    logp = torch.tensor([-1.0, -1.0, -1.0, -1.0, -1.0])
    behaviour = torch.tensor([-1.5, -0.5, -3.0, float("nan"), -1.2])
    token = truncated_is_weights(logp, behaviour, [3, 2], "token", 2.0)
    torch.testing.assert_close(token, torch.tensor([np.exp(0.5), np.exp(-0.5), 2.0, 1.0, np.exp(0.2)], dtype=torch.float32))
    sequence = truncated_is_weights(logp, behaviour, [3, 2], "sequence", 10.0)
    first, second = np.exp(0.5 - 0.5 + 2.0), np.exp(0.2)
    torch.testing.assert_close(sequence, torch.tensor([first, first, first, 1.0, second], dtype=torch.float32))
    assert torch.equal(truncated_is_weights(logp, behaviour, [3, 2], "none", 2.0), torch.ones(5))


BATCH = [
    ([5, 6, 7], [100, 200, 300], "deduction_solve", 1.2),
    ([8, 9], [11, 12, 13, 14, 15], "deduction_solve", -0.7),
    ([40, 41, 42, 43], [50, 51, 52, 53], "abduction_propose", 0.5),
]


def _batch(model: Any, shift: float, *, as_old: bool = False) -> list[TrainSequence]:
    """Behaviour (or old) log-probs = the trainer's + alternating +-shift: ratios exp(-+shift)."""
    out = []
    for prompt, response, group, advantage in BATCH:
        current = _trainer_logprobs(model, tuple(prompt), tuple(response))
        shifted = [v + (shift if i % 2 == 0 else -shift) for i, v in enumerate(current)]
        out.append(TrainSequence(prompt, response, group, advantage, shifted if as_old else None,
                                 None if as_old else shifted))
    return out


def _grads(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.usefixtures("fresh_accelerate")
def test_the_update_measures_the_gap_and_leaves_the_loss_on_policy_by_default() -> None:
    model = tiny_model(0)
    batch = _batch(model, 0.3)
    plain = [TrainSequence(s.prompt_ids, s.response_ids, s.group, s.advantage) for s in batch]
    settings = UpdateSettings(micro_batch_size=2)
    reference = copy.deepcopy(model)
    measured = _updater(model, settings).accumulate(batch)
    unmeasured = _updater(reference, settings).accumulate(plain)
    assert measured.loss == pytest.approx(unmeasured.loss, rel=1e-6), "measuring changes nothing"
    assert measured.clip_frac == 0.0
    gap = measured.off_policy
    assert gap["mismatch_mean"] == pytest.approx(0.3, abs=1e-4) and gap["mismatch_max"] == pytest.approx(0.3, abs=1e-4)
    assert gap["ratio_p01"] == pytest.approx(np.exp(-0.3), rel=1e-3) and gap["ratio_p99"] == pytest.approx(np.exp(0.3), rel=1e-3)
    assert gap["behaviour_coverage"] == 1.0
    assert unmeasured.off_policy == {"behaviour_coverage": 0.0}


@pytest.mark.usefixtures("fresh_accelerate")
def test_the_ratio_against_behaviour_logprobs_is_the_ppo_ratio_against_them() -> None:
    """ratio_base behaviour on behaviour log-probs = old log-probs given as such (whose loss the
    TRR++ hand computation pins, tests/unit/test_engine_update.py): clipped tokens and all."""
    model = tiny_model(0)
    other = copy.deepcopy(model)
    settings = UpdateSettings(micro_batch_size=2, ratio_base="behaviour")
    corrected = _updater(model, settings).accumulate(_batch(model, 0.5))
    as_old = _updater(other, UpdateSettings(micro_batch_size=2)).accumulate(_batch(other, 0.5, as_old=True))
    assert corrected.clip_frac == pytest.approx(as_old.clip_frac) and corrected.clip_frac > 0.2
    assert corrected.loss == pytest.approx(as_old.loss, rel=1e-6)
    for name, grad in _grads(other).items():
        torch.testing.assert_close(_grads(model)[name], grad)


@pytest.mark.usefixtures("fresh_accelerate")
@pytest.mark.parametrize("mode", ["token", "sequence"])
def test_truncated_importance_sampling_weights_the_on_policy_surrogate(mode: str) -> None:
    """On-policy the surrogate of a token is -A; with rollout_is it is -A x min(ratio, cap)."""
    model = tiny_model(0)
    cap = 1.2
    settings = UpdateSettings(micro_batch_size=2, entropy_coef=0.0, rollout_is=mode, rollout_is_cap=cap)
    metrics = _updater(model, settings).accumulate(_batch(model, 0.3))
    groups: dict[str, list[float]] = {}
    truncated = tokens = 0
    for _, response, group, advantage in BATCH:
        log_ratios = [-0.3 if i % 2 == 0 else 0.3 for i in range(len(response))]
        if mode == "sequence":
            log_ratios = [sum(log_ratios)] * len(response)
        groups.setdefault(group, []).extend(-advantage * min(np.exp(r), cap) for r in log_ratios)
        truncated += sum(np.exp(r) >= cap for r in log_ratios)
        tokens += len(response)
    expected = np.mean([np.mean(values) for values in groups.values()])
    assert metrics.pg_loss == pytest.approx(expected, rel=1e-4)
    assert metrics.off_policy["is_truncated_frac"] == pytest.approx(truncated / tokens)
    assert (truncated > 0) == (mode == "token")


def test_one_correction_at_a_time() -> None:
    from azr.config.schema import TrainerConfig

    with pytest.raises(ValueError, match="twice"):
        TrainerConfig(ratio_base="behaviour", rollout_is="token")
    assert TrainerConfig().resolved_ratio_base(0) == "trainer"
    assert TrainerConfig().resolved_ratio_base(1) == "behaviour"
    assert TrainerConfig(rollout_is="token").resolved_ratio_base(1) == "trainer"
