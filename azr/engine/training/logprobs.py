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


def chunk_starts(tokens: int, chunk_tokens: int, calls: int | None = None) -> list[int]:
    """Where each chunk starts; `calls` pads the list with empty chunks (starting at `tokens`)
    so that the head runs exactly that many times. Under ZeRO-3 every head call gathers the
    head's weight collectively, so all ranks must call it equally often, whatever their token
    counts (issue 22, item 2)."""
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    starts = list(range(0, tokens, chunk_tokens))
    if calls is not None:
        if calls < len(starts):
            raise ValueError(f"{calls} head calls cannot cover {tokens} tokens in chunks of {chunk_tokens}")
        starts += [tokens] * (calls - len(starts))
    return starts


def head_calls(tokens: int, chunk_tokens: int) -> int:
    """How many chunks `tokens` tokens take."""
    return -(-tokens // chunk_tokens)


def token_logprobs_and_entropy(
    head: Head, hidden: torch.Tensor, targets: torch.Tensor, chunk_tokens: int, calls: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-prob of `targets` and entropy, for hidden states of shape [tokens, dim];
    `calls`: run the head exactly that many times (see `chunk_starts`)."""
    logprobs, entropies = [], []
    for start in chunk_starts(hidden.shape[0], chunk_tokens, calls):
        h, t = hidden[start:start + chunk_tokens], targets[start:start + chunk_tokens]
        if torch.is_grad_enabled() and h.requires_grad:
            lp, ent = checkpoint(_chunk_stats, head, h, t, use_reentrant=False)
        else:
            lp, ent = _chunk_stats(head, h, t)
        logprobs.append(lp)
        entropies.append(ent)
    return torch.cat(logprobs), torch.cat(entropies)


def token_logprobs(head: Head, hidden: torch.Tensor, targets: torch.Tensor, chunk_tokens: int,
                   calls: int | None = None) -> torch.Tensor:
    """Log-probs only (no entropy), without gradients: for old or reference log-probs."""
    with torch.no_grad():
        return torch.cat(
            [
                _chunk_logprobs(head, hidden[s:s + chunk_tokens], targets[s:s + chunk_tokens])
                for s in chunk_starts(hidden.shape[0], chunk_tokens, calls)
            ]
        )
