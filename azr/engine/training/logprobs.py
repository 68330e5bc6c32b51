"""Token log-probabilities and entropies without full-vocabulary logits for the whole batch.

A 49k-token vocabulary makes fp32 logits of 8 x 512 tokens 800 MB, and log_softmax, softmax
and their gradients several times that. Here the output head runs over chunks of response
tokens only; with gradients on, each chunk sits inside `torch.utils.checkpoint`, so its logits
are freed after the forward and recomputed during backward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

Head = Callable[[torch.Tensor], torch.Tensor]


def _chunk_stats(head: Head, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target) and the entropy of the full distribution, in fp32, for one chunk."""
    logits = head(hidden).float()
    log_norm = torch.logsumexp(logits, dim=-1)
    token_logprobs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - log_norm
    probs = torch.softmax(logits, dim=-1)
    entropy = log_norm - (probs * logits).sum(dim=-1)
    return token_logprobs, entropy


def _chunk_logprobs(head: Head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def token_logprobs_and_entropy(
    head: Head, hidden: torch.Tensor, targets: torch.Tensor, chunk_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-prob of `targets` and entropy, for hidden states of shape [tokens, dim]."""
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    logprobs, entropies = [], []
    for start in range(0, hidden.shape[0], chunk_tokens):
        h, t = hidden[start:start + chunk_tokens], targets[start:start + chunk_tokens]
        if torch.is_grad_enabled() and h.requires_grad:
            lp, ent = checkpoint(_chunk_stats, head, h, t, use_reentrant=False)
        else:
            lp, ent = _chunk_stats(head, h, t)
        logprobs.append(lp)
        entropies.append(ent)
    return torch.cat(logprobs), torch.cat(entropies)


def token_logprobs(head: Head, hidden: torch.Tensor, targets: torch.Tensor, chunk_tokens: int) -> torch.Tensor:
    """Log-probs only (no entropy), without gradients: for old or reference log-probs."""
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    with torch.no_grad():
        return torch.cat(
            [
                _chunk_logprobs(head, hidden[s:s + chunk_tokens], targets[s:s + chunk_tokens])
                for s in range(0, hidden.shape[0], chunk_tokens)
            ]
        )
