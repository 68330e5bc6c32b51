"""A micro-batch's common prompt prefix, computed once in the update's forward and backward.

The prompts of one (task type, role) group share most of their tokens: the instructions, the
worked example, often the references (on the cpu preset 75-100% of each prompt is common to its
group, and prompts are about 78% of the update's tokens). Run as one padded batch, every row
recomputes that prefix, in the forward and again in the backward. Here the prefix runs once (a
batch of one, with its key/value cache kept in the autograd graph), the cache is repeated over
the rows, and only each row's remainder (the rest of its prompt and its response) runs on top
of it. The log-probs are those of the full forward up to float rounding; the gradient reaches
the prefix's activations through the cache from every row, so it is the full gradient too
(tests/unit/test_shared_prefix.py compares both).

Only for one process without gradient checkpointing: transformers turns the cache off under
checkpointing, and DDP, FSDP2 and ZeRO-3 expect one forward per backward.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

MIN_SHARED_TOKENS = 16
"""Below this a second forward costs more than the prefix it saves."""


def common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, at most the shortest prompt's length minus one: each
    row's last prompt token stays in its own part, since its hidden state predicts the first
    response token."""
    if len(prompts) < 2:
        return 0
    shortest = min(len(p) for p in prompts)
    first = prompts[0]
    length = 0
    while length < shortest - 1 and all(p[length] == first[length] for p in prompts[1:]):
        length += 1
    return length


def worth_sharing(prefix_length: int, rows: int) -> bool:
    return rows > 1 and prefix_length >= MIN_SHARED_TOKENS


def sharing_supported(model: torch.nn.Module, num_processes: int, distributed_wrapper: bool) -> bool:
    """One process, a plain (not DDP/FSDP/DeepSpeed-wrapped) model, no gradient checkpointing."""
    if num_processes != 1 or distributed_wrapper:
        return False
    return not any(getattr(module, "gradient_checkpointing", False) for module in model.modules())


def hidden_after_prefix(model: torch.nn.Module, prefix_ids: torch.Tensor, suffix_ids: torch.Tensor,
                        suffix_mask: torch.Tensor) -> torch.Tensor:
    """Final hidden states [rows, suffix width, dim] of `suffix_ids` (right-padded, rows x width)
    read after the one shared `prefix_ids` [prefix length]."""
    rows = suffix_ids.shape[0]
    prefix = model(input_ids=prefix_ids.unsqueeze(0), use_cache=True, logits_to_keep=1)
    cache = _returned_cache(prefix)
    cache.batch_repeat_interleave(rows)  # a copy per row in the graph: their gradients add up
    ones = torch.ones((rows, prefix_ids.shape[0]), dtype=suffix_mask.dtype, device=suffix_mask.device)
    out = model(
        input_ids=suffix_ids,
        attention_mask=torch.cat([ones, suffix_mask], dim=1),
        use_cache=True,
        output_hidden_states=True,
        logits_to_keep=1,
        **{_cache_keyword(model): cache},
    )
    return out.hidden_states[-1]


def _cache_keyword(model: torch.nn.Module) -> str:
    """transformers 5.25 renamed the forward's `past_key_values` to `cache` (the old name warns)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _returned_cache(output: object) -> Any:
    cache = getattr(output, "cache", None) if "cache" in getattr(output, "keys", lambda: ())() else None
    return cache if cache is not None else output.past_key_values  # type: ignore[attr-defined]
