"""The TRR++ update on a tiny random model: direction of the step, the loss and its gradient
against a hand computation (per-group weighting, entropy, clipping, KL), micro-batching."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from azr.engine.models.loading import tiny_model
from azr.engine.api import TrainSequence
from azr.engine.training.trrpp_update import TRRPPUpdate, UpdateSettings

pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def _updater(model: Any, settings: UpdateSettings, lr: float = 1e-3, reference: Any = None) -> TRRPPUpdate:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    return TRRPPUpdate(model, optimizer, accelerator, settings, reference_model=reference)


def _seq(prompt: list[int], response: list[int], group: str, advantage: float, old: list[float] | None = None) -> TrainSequence:
    return TrainSequence(prompt, response, group, advantage, old)


def _hand_terms(model: Any, seq: TrainSequence) -> tuple[torch.Tensor, torch.Tensor]:
    """log p of each response token and the entropy at its position, from the full logits."""
    ids = torch.tensor([list(seq.prompt_ids) + list(seq.response_ids)])
    logits = model(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    start = len(seq.prompt_ids) - 1
    rows = range(start, start + len(seq.response_ids))
    token = torch.stack([logp[r, t] for r, t in zip(rows, seq.response_ids)])
    entropy = torch.stack([-(logp[r].exp() * logp[r]).sum() for r in rows])
    return token, entropy


BATCH = [
    _seq([5, 6, 7], [100, 200, 300], "deduction_solve", 1.2),
    _seq([8, 9], [11, 12, 13, 14, 15], "deduction_solve", -0.7),
    _seq([40, 41, 42, 43], [50, 51, 52, 53], "abduction_propose", 0.5),
    _seq([70], [71, 72], "induction_solve", -1.5),
]


def _with_old_logprobs(model: Any, batch: list[TrainSequence], shifts: dict[int, list[float]]) -> list[TrainSequence]:
    """Old log-probs = current ones + a shift, so ratios are exp(-shift): some get clipped."""
    out = []
    for index, seq in enumerate(batch):
        if index in shifts:
            with torch.no_grad():
                current, _ = _hand_terms(model, seq)
            old = (current + torch.tensor(shifts[index])).tolist()
            seq = _seq(list(seq.prompt_ids), list(seq.response_ids), seq.group, seq.advantage, old)
        out.append(seq)
    return out


def _hand_loss(model: Any, batch: list[TrainSequence], settings: UpdateSettings, reference: Any = None) -> dict[str, Any]:
    groups: dict[str, list[dict[str, torch.Tensor]]] = {}
    clipped_tokens = 0
    for seq in batch:
        logp, entropy = _hand_terms(model, seq)
        old = torch.tensor(seq.old_logprobs) if seq.old_logprobs is not None else logp.detach()
        ratio = torch.exp(logp - old)
        eps = settings.clip_ratio
        a = seq.advantage
        pg = torch.maximum(-a * ratio, -a * torch.clamp(ratio, 1 - eps, 1 + eps))
        clipped_tokens += int(((-a * torch.clamp(ratio, 1 - eps, 1 + eps)) > (-a * ratio)).sum())
        terms = {"pg": pg, "entropy": entropy}
        if reference is not None:
            with torch.no_grad():
                ref, _ = _hand_terms(reference, seq)
            terms["kl"] = torch.exp(ref - logp) - (ref - logp) - 1
        groups.setdefault(seq.group, []).append(terms)
    means = {
        name: {key: torch.cat([t[key] for t in items]).mean() for key in items[0]}
        for name, items in groups.items()
    }
    G = len(means)
    pg = sum(m["pg"] for m in means.values()) / G
    entropy = sum(m["entropy"] for m in means.values()) / G
    loss = pg - settings.entropy_coef * entropy
    kl = None
    if reference is not None:
        kl = sum(m["kl"] for m in means.values()) / G
        loss = loss + settings.kl_coef * kl
    tokens = sum(len(s.response_ids) for s in batch)
    return {"loss": loss, "pg": pg, "entropy": entropy, "kl": kl, "clip_frac": clipped_tokens / tokens}


def _grads(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_grads_close(ours: dict[str, torch.Tensor], hand: dict[str, torch.Tensor]) -> None:
    """Equal up to fp32 rounding, measured against each tensor's scale."""
    assert ours.keys() == hand.keys() and ours
    for name in hand:
        scale = float(hand[name].abs().max())
        assert scale > 0, name
        torch.testing.assert_close(ours[name], hand[name], rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_loss_and_gradient_equal_a_hand_computation() -> None:
    settings = UpdateSettings(clip_ratio=0.2, entropy_coef=0.05, micro_batch_size=2, logits_chunk_tokens=3)
    model = tiny_model(0)
    # Sequence 0 (A > 0): ratios e^-0.5 (unclipped), e^0.5 (clipped), 1. Sequence 3 (A < 0): e^0.4 (unclipped), e^-0.4 (clipped).
    batch = _with_old_logprobs(model, BATCH, {0: [0.5, -0.5, 0.0], 3: [-0.4, 0.4]})
    hand_model = copy.deepcopy(model)
    hand = _hand_loss(hand_model, batch, settings)
    hand["loss"].backward()
    updater = _updater(model, settings)
    metrics = updater.accumulate(batch)

    assert metrics.loss == pytest.approx(hand["loss"].item(), rel=1e-5)
    assert metrics.pg_loss == pytest.approx(hand["pg"].item(), rel=1e-5)
    assert metrics.entropy == pytest.approx(hand["entropy"].item(), rel=1e-5)
    assert metrics.clip_frac == pytest.approx(hand["clip_frac"]) and hand["clip_frac"] == pytest.approx(2 / 14)
    assert metrics.tokens == 14 and metrics.sequences == 4 and metrics.kl is None
    assert {g: m.tokens for g, m in metrics.groups.items()} == {
        "deduction_solve": 8, "abduction_propose": 4, "induction_solve": 2
    }
    _assert_grads_close(_grads(model), _grads(hand_model))


def test_equal_weight_per_group_not_per_token() -> None:
    """A 2-token group weighs as much as an 8-token group: a plain token-mean would differ."""
    settings = UpdateSettings(entropy_coef=0.0)
    model = tiny_model(0)
    metrics = _updater(model, settings).accumulate(BATCH)
    # on-policy the surrogate is -A per token: group means are -(8-token mean), -0.5, +1.5
    dedu = -(1.2 * 3 - 0.7 * 5) / 8
    assert metrics.pg_loss == pytest.approx((dedu - 0.5 + 1.5) / 3, rel=1e-6)
    token_mean = -(1.2 * 3 - 0.7 * 5 + 0.5 * 4 - 1.5 * 2) / 14
    assert metrics.pg_loss != pytest.approx(token_mean, rel=1e-3)


def test_kl_to_a_frozen_reference_equals_the_hand_computation() -> None:
    settings = UpdateSettings(entropy_coef=0.01, kl_coef=0.5, micro_batch_size=3)
    reference = tiny_model(0).eval().requires_grad_(False)
    model = tiny_model(0)
    with torch.no_grad():  # move the policy away from the reference
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hand_model = copy.deepcopy(model)
    hand = _hand_loss(hand_model, BATCH, settings, reference=reference)
    hand["loss"].backward()
    metrics = _updater(model, settings, reference=reference).accumulate(BATCH)
    assert hand["kl"] > 0
    assert metrics.kl == pytest.approx(hand["kl"].item(), rel=1e-4)
    assert metrics.loss == pytest.approx(hand["loss"].item(), rel=1e-5)
    _assert_grads_close(_grads(model), _grads(hand_model))


def test_micro_batches_accumulate_to_the_full_batch_gradient() -> None:
    grads = []
    for micro in (1, 3, 8):
        model = tiny_model(0)
        _updater(model, UpdateSettings(micro_batch_size=micro, logits_chunk_tokens=4)).accumulate(BATCH)
        grads.append(_grads(model))
    _assert_grads_close(grads[0], grads[2])
    _assert_grads_close(grads[1], grads[2])


@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_advantage_sign_moves_the_sequence_log_prob(advantage: float) -> None:
    seq = _seq([3, 4, 5, 6], [900, 901, 902, 903, 904], "deduction_solve", advantage)
    updater = _updater(tiny_model(0), UpdateSettings(entropy_coef=0.0), lr=1e-3)
    before = updater.sequence_logprobs([seq])[0].sum()
    metrics = updater.step([seq])
    after = updater.sequence_logprobs([seq])[0].sum()
    assert metrics.grad_norm > 0 and not metrics.skipped
    assert (after - before) * advantage > 0.05


def test_step_clips_the_gradient_and_reports_its_norm() -> None:
    settings = UpdateSettings(max_grad_norm=1e-3, micro_batch_size=4)
    model = tiny_model(0)
    updater = _updater(model, settings)
    unclipped = updater.accumulate(BATCH)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in _grads(model).values()]))
    grad_norm, skipped = updater.apply_gradients()
    assert grad_norm == pytest.approx(float(norm), rel=1e-5) and grad_norm > 1e-3 and not skipped
    assert unclipped.learning_rate == 1e-3
    assert all(p.grad is None for p in model.parameters()), "gradients are cleared after the step"


def test_bad_sequences_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown group 'deduction'"):
        _seq([1], [2], "deduction", 1.0)
    with pytest.raises(ValueError, match="at least one response token"):
        _seq([1], [], "deduction_solve", 1.0)
    with pytest.raises(ValueError, match="non-empty prompt"):
        _seq([], [2], "deduction_solve", 1.0)
    with pytest.raises(ValueError, match="2 values for 1 response tokens"):
        _seq([1], [2], "deduction_solve", 1.0, [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        _seq([1], [2], "deduction_solve", float("nan"))
    updater = _updater(tiny_model(0), UpdateSettings())
    with pytest.raises(ValueError, match="at least one sequence"):
        updater.step([])
    with pytest.raises(ValueError, match="reference model"):
        TRRPPUpdate(updater.model, updater.optimizer, updater.accelerator, UpdateSettings(kl_coef=0.1))
