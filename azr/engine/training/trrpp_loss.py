"""The TRR++ objective of a micro-batch's response tokens, as a pure function (docs/algorithm.md §9.2).

Per response token t, with r_t = exp(logp_t - logp_old_t) and A_t the sequence's advantage:

    pg_t        = max(-A_t * r_t, -A_t * clip(r_t, 1 - eps, 1 + eps))      the PPO clipped surrogate
    kl_t        = exp(ref_t - logp_t) - (ref_t - logp_t) - 1                 k3, only with a reference
    objective_t = pg_t - entropy_coef * H_t + kl_coef * kl_t
    loss        = sum_t weight_t * objective_t

With truncated importance weights w_t (`rollout_is`, docs/algorithm.md §14) pg_t is w_t times
the surrogate. The weights carry the rest of TRR++ (a token-mean inside each group, equal weight per group,
zero for padding or a filler micro-batch; `azr.engine.training.trrpp_update`). A token without
an old log-prob (NaN) is on-policy: its ratio is exactly 1, with the gradient of logp_t.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOG_RATIO_LIMIT = 20.0  # exp() of a larger log-ratio overflows; the original clamps likewise
KL_LIMIT = 10.0


@dataclass(frozen=True)
class LossSettings:
    clip_ratio: float  # eps of the clipped surrogate
    entropy_coef: float
    kl_coef: float  # 0: no KL term, no reference model needed


@dataclass(frozen=True)
class TokenLoss:
    """The loss of some response tokens and its named per-token terms ([tokens] tensors)."""

    loss: torch.Tensor  # scalar, differentiable: what the update backpropagates
    policy_loss: torch.Tensor  # pg_t
    entropy: torch.Tensor  # H_t
    kl: torch.Tensor | None  # kl_t; None without reference log-probs
    clipped: torch.Tensor  # bool: the clipped side of the surrogate was the larger
    weights: torch.Tensor  # weight_t, as given
    is_weights: torch.Tensor | None  # the importance weights on pg_t, as given

    @property
    def tokens(self) -> int:
        return int(self.policy_loss.numel())

    @property
    def clipped_tokens(self) -> int:
        return int(self.clipped.sum())

    @property
    def clipped_fraction(self) -> float:
        return self.clipped_tokens / self.tokens if self.tokens else 0.0

    @torch.no_grad()
    def weighted(self, term: torch.Tensor) -> float:
        """sum_t weight_t * term_t in float64: a term's share of the loss, as a metric."""
        return float((self.weights.double() * term.double()).sum())


def trrpp_token_loss(
    logprobs: torch.Tensor,
    entropy: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    settings: LossSettings,
    *,
    old_logprobs: torch.Tensor | None = None,
    reference_logprobs: torch.Tensor | None = None,
    is_weights: torch.Tensor | None = None,
) -> TokenLoss:
    """The weighted TRR++ loss of tokens whose current log-probs (with gradient) and entropies
    are given; every argument is a [tokens] tensor. `old_logprobs` NaN (or None) means
    on-policy; `reference_logprobs` None means no KL term; `is_weights` None means none."""
    if old_logprobs is None:
        old = logprobs.detach()
    else:
        old = torch.where(torch.isnan(old_logprobs), logprobs.detach(), old_logprobs)
    ratio = torch.exp(torch.clamp(logprobs - old, -LOG_RATIO_LIMIT, LOG_RATIO_LIMIT))
    eps = settings.clip_ratio
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - eps, 1.0 + eps)
    policy_loss = torch.maximum(unclipped, clipped)
    if is_weights is not None:
        policy_loss = is_weights * policy_loss
    objective = policy_loss - settings.entropy_coef * entropy
    kl = None
    if reference_logprobs is not None:
        log_ratio = reference_logprobs - logprobs
        kl = torch.clamp(torch.exp(log_ratio) - log_ratio - 1.0, -KL_LIMIT, KL_LIMIT)
        objective = objective + settings.kl_coef * kl
    return TokenLoss(
        loss=(weights * objective).sum(),
        policy_loss=policy_loss,
        entropy=entropy,
        kl=kl,
        clipped=(clipped > unclipped).detach(),
        weights=weights,
        is_weights=is_weights,
    )
