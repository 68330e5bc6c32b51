"""The pure TRR++ token loss against a case computed by hand: both sides of the clipped
surrogate, an on-policy token (no old log-prob), the entropy bonus, the k3 KL and the weights."""

from __future__ import annotations

import math

import pytest
import torch

from azr.engine.training.trrpp_loss import LossSettings, trrpp_token_loss

LN2, LN15 = math.log(2.0), math.log(1.5)


def _case() -> dict[str, torch.Tensor]:
    old = torch.tensor([-1.0, -1.0, float("nan"), -1.0])
    logprobs = torch.tensor([-1.0 + LN15, -1.0 - LN2, -0.7, -1.0 - LN2], requires_grad=True)
    return {
        "logprobs": logprobs,
        "old": old,
        # ratios 1.5, 0.5, 1 (on-policy), 0.5
        "advantages": torch.tensor([1.0, 1.0, -2.0, -1.0]),
        "entropy": torch.tensor([1.0, 2.0, 0.5, 0.0]),
        "weights": torch.tensor([0.25, 0.25, 0.5, 0.0]),
        "reference": (logprobs.detach() + torch.tensor([0.0, LN2, 0.0, -LN2])),
    }


def test_the_terms_of_a_hand_computed_case() -> None:
    c = _case()
    out = trrpp_token_loss(c["logprobs"], c["entropy"], c["advantages"], c["weights"],
                           LossSettings(clip_ratio=0.2, entropy_coef=0.1, kl_coef=0.5),
                           old_logprobs=c["old"], reference_logprobs=c["reference"])
    # pg: max(-1.5, -1.2), max(-0.5, -0.8), max(2, 2), max(0.5, 0.8)
    assert out.policy_loss.tolist() == pytest.approx([-1.2, -0.5, 2.0, 0.8], abs=1e-6)
    assert out.clipped.tolist() == [True, False, False, True]
    assert (out.tokens, out.clipped_tokens, out.clipped_fraction) == (4, 2, 0.5)
    # k3 at log(ref/p) = 0, ln 2, 0, -ln 2
    assert out.kl is not None
    assert out.kl.tolist() == pytest.approx([0.0, 1.0 - LN2, 0.0, LN2 - 0.5], abs=1e-6)
    # 0.25 * (-1.2 - 0.1) + 0.25 * (-0.5 - 0.2 + 0.5 (1 - ln 2)) + 0.5 * (2 - 0.05) + 0 * ...
    assert float(out.loss.detach()) == pytest.approx(0.6 - 0.125 * LN2, abs=1e-6)
    assert out.weighted(out.policy_loss) == pytest.approx(0.575, abs=1e-6)
    assert out.weighted(out.entropy) == pytest.approx(0.25 + 0.5 + 0.25, abs=1e-6)
    out.loss.backward()
    # clipped tokens pass no surrogate gradient; the KL's is (1 - ref/p) * kl_coef * weight
    assert c["logprobs"].grad.tolist() == pytest.approx([0.0, 0.25 * (-0.5 - 0.5), 0.5 * 2.0, 0.0], abs=1e-6)


def test_without_old_log_probs_or_a_reference_it_is_reinforce() -> None:
    c = _case()
    out = trrpp_token_loss(c["logprobs"], c["entropy"], c["advantages"], c["weights"],
                           LossSettings(clip_ratio=0.2, entropy_coef=0.0, kl_coef=0.0))
    assert out.kl is None and out.clipped_tokens == 0
    assert out.policy_loss.tolist() == pytest.approx((-c["advantages"]).tolist())
    out.loss.backward()
    assert c["logprobs"].grad.tolist() == pytest.approx((-c["advantages"] * c["weights"]).tolist())


def test_an_extreme_log_ratio_is_clamped_not_infinite() -> None:
    logprobs = torch.tensor([50.0], requires_grad=True)
    out = trrpp_token_loss(logprobs, torch.zeros(1), torch.tensor([-1.0]), torch.ones(1),
                           LossSettings(clip_ratio=0.2, entropy_coef=0.0, kl_coef=0.0),
                           old_logprobs=torch.zeros(1))
    assert float(out.loss.detach()) == pytest.approx(math.exp(20.0), rel=1e-5)


def test_importance_weights_scale_the_surrogate_only() -> None:
    c = _case()
    settings = LossSettings(clip_ratio=0.2, entropy_coef=0.1, kl_coef=0.0)
    is_weights = torch.tensor([0.5, 2.0, 1.0, 1.0])
    out = trrpp_token_loss(c["logprobs"], c["entropy"], c["advantages"], c["weights"], settings,
                           old_logprobs=c["old"], is_weights=is_weights)
    assert out.policy_loss.tolist() == pytest.approx([-0.6, -1.0, 2.0, 0.8], abs=1e-6)
    assert out.clipped.tolist() == [True, False, False, True]  # decided before the weights
    assert float(out.loss.detach()) == pytest.approx(0.25 * (-0.6 - 0.1) + 0.25 * (-1.0 - 0.2) + 0.5 * 1.95, abs=1e-6)
