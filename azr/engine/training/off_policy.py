"""The gap between the policy that sampled a batch and the policy the update trains
(docs/algorithm.md §14): measured every update, and optionally corrected.

The rollout engine records the behaviour log-prob of every sampled token (logp_rollout). The
update computes the trainer's log-prob of the same token anyway (logp_trainer). Their
difference has two causes: policy lag (the batch was sampled by older weights, one step-off
self-play) and engine mismatch (vLLM's kernels, bf16, a KV cache against the trainer's
forward). Both are reported the same way:

- the token-mean and the largest |logp_rollout - logp_trainer| over the sampled tokens;
- percentiles of the token importance ratio exp(logp_trainer - logp_rollout);
- the share of tokens that had behaviour log-probs (`behaviour_coverage`).

The correction is either the PPO ratio against the behaviour log-probs (`trainer.ratio_base:
behaviour`), or truncated importance sampling (`trainer.rollout_is: token | sequence`) on top
of the on-policy ratio: each token's policy-gradient term is weighted by
min(exp(logp_trainer - logp_rollout), cap), per token or with the sequence's summed log-ratio.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

PERCENTILES = (1, 5, 50, 95, 99)
_LOG_LIMIT = 20.0  # exp() of a larger log-ratio overflows


def behaviour_tensor(logprobs: Sequence[Sequence[float] | None], lengths: Sequence[int],
                     device: torch.device | str) -> torch.Tensor:
    """The behaviour log-probs of a micro-batch's response tokens, concatenated; NaN for a
    sequence whose engine recorded none."""
    parts = [torch.tensor(values, dtype=torch.float32) if values is not None else torch.full((n,), float("nan"))
             for values, n in zip(logprobs, lengths)]
    return torch.cat(parts).to(device) if parts else torch.zeros(0, device=device)


def truncated_is_weights(logp: torch.Tensor, behaviour: torch.Tensor, lengths: Sequence[int], mode: str,
                         cap: float) -> torch.Tensor:
    """Detached weights min(pi_trainer / pi_rollout, cap) per token (`token`) or per sequence
    (`sequence`: the product over its tokens, repeated on each); 1 where the behaviour log-prob
    is missing, and everywhere for `none`."""
    ones = torch.ones_like(logp)
    if mode == "none":
        return ones
    known = ~torch.isnan(behaviour)
    log_ratio = torch.where(known, logp.detach() - torch.nan_to_num(behaviour), torch.zeros_like(logp))
    if mode == "sequence":
        sums = torch.stack([part.sum() for part in torch.split(log_ratio, list(lengths))]) if len(lengths) else log_ratio[:0]
        log_ratio = torch.repeat_interleave(sums, torch.tensor(list(lengths), device=logp.device))
    elif mode != "token":
        raise ValueError(f"unknown rollout_is mode {mode!r}; use none, token or sequence")
    weights = torch.exp(torch.clamp(log_ratio, -_LOG_LIMIT, _LOG_LIMIT)).clamp(max=cap)
    return torch.where(known, weights, ones)


class GapRecorder:
    """Collects, over an update's micro-batches, logp_trainer - logp_rollout of every token
    that has a behaviour log-prob, and how many IS weights were truncated."""

    def __init__(self) -> None:
        self.log_ratios: list[np.ndarray] = []
        self.tokens = 0
        self.truncated = 0

    def add(self, logp: torch.Tensor, behaviour: torch.Tensor, weights: torch.Tensor | None = None,
            cap: float | None = None) -> None:
        known = ~torch.isnan(behaviour)
        self.tokens += int(behaviour.numel())
        self.log_ratios.append((logp.detach().float() - behaviour)[known].double().cpu().numpy())
        if weights is not None and cap is not None:
            self.truncated += int((weights[known] >= cap).sum())

    def local(self) -> dict[str, Any]:
        """This rank's share, to gather over ranks before `gap_metrics`."""
        values = np.concatenate(self.log_ratios) if self.log_ratios else np.zeros(0)
        return {"log_ratios": values, "tokens": self.tokens, "truncated": self.truncated}


def gap_metrics(parts: Sequence[dict[str, Any]], rollout_is: str = "none") -> dict[str, float]:
    """The off-policy figures of one update from every rank's `GapRecorder.local()`; empty when
    no token had a behaviour log-prob (nothing to tell)."""
    values = np.concatenate([part["log_ratios"] for part in parts]) if parts else np.zeros(0)
    tokens = sum(int(part["tokens"]) for part in parts)
    if values.size == 0:
        return {"behaviour_coverage": 0.0} if tokens else {}
    ratios = np.exp(np.clip(values, -_LOG_LIMIT, _LOG_LIMIT))
    metrics = {
        "behaviour_coverage": float(values.size / tokens) if tokens else 0.0,
        "mismatch_mean": float(np.abs(values).mean()),
        "mismatch_max": float(np.abs(values).max()),
        "log_ratio_mean": float(values.mean()),
        **{f"ratio_p{p:02d}": float(v) for p, v in zip(PERCENTILES, np.percentile(ratios, PERCENTILES))},
    }
    if rollout_is != "none":
        metrics["is_truncated_frac"] = float(sum(int(part["truncated"]) for part in parts) / values.size)
    return metrics
