"""The completion record every backend returns, and prompt encoding: no torch, so the
controller can build the same records from a vLLM server's answer (one-step-off generation,
azr.engine.controller.direct_rollout)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from azr.engine.api import Completion

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of formatted prompts (no special tokens added: the wrapper placed them)."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of strings, not one string")
    if not prompts:
        return []
    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    for index, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"prompt {index} is empty: there is nothing to continue")
    return [list(ids) for ids in encoded]


def completion_record(
    generated: Sequence[int],
    prompt: Sequence[int],
    eos_token_ids: Sequence[int],
    max_new_tokens: int,
    tokenizer: PreTrainedTokenizerBase,
    *,
    finish_reason: str = "length",
    logprobs: Sequence[float] | None = None,
) -> Completion:
    """The record every backend returns: cut after the first EOS ('stop', the EOS kept), else
    at `max_new_tokens` ('length'). An engine that reports another `finish_reason` for an output
    with no EOS and under the limit (vLLM's 'abort') cut it short: that is an error, since a
    shortened rollout would be scored as an answer. `logprobs` (one per generated token) are
    cut with the ids (fewer than the ids: None)."""
    ids = tuple(int(t) for t in generated)
    eos = set(eos_token_ids)
    stop = next((i for i, token in enumerate(ids) if token in eos), None)
    if stop is not None:
        ids, reason = ids[: stop + 1], "stop"
    elif finish_reason != "length" and len(ids) < max_new_tokens:
        raise RuntimeError(
            f"the engine ended a completion with finish_reason={finish_reason!r} after {len(ids)} tokens "
            "and no EOS token; the request was aborted or cut short (see the engine's log)"
        )
    else:
        ids, reason = ids[:max_new_tokens], "length"
    text = tokenizer.decode(list(ids), skip_special_tokens=True)
    # An engine that gave fewer log-probs than tokens recorded none usable: None (the update
    # reports the share of tokens that had them, `behaviour_coverage`).
    kept = tuple(float(x) for x in logprobs[: len(ids)]) if logprobs is not None and len(logprobs) >= len(ids) else None
    return Completion(text, ids, tuple(int(t) for t in prompt), reason, kept)  # type: ignore[arg-type]
