"""Sampling with a random stream of its own for every row of a batched `model.generate`.

transformers samples a batch with one `torch.multinomial` on the global generator, so what a
row draws depends on which rows share its batch and in what order. Here every sampled row has
its own `torch.Generator`, seeded from (request seed, prompt index, sample index), and draws
exactly one uniform number per decoding step; the token is found by inverting the row's
cumulative distribution. A row's tokens therefore depend on its own logits alone: the same
whether its request is decoded alone, merged with other requests into one call, batched
differently or split over ranks (up to the floating-point rounding of the forward pass, which
can change with the padding of the batch it is in).

The processor runs inside transformers' greedy loop: a sampled row gets a score of 0 for the
token it drew and -inf for every other token, so argmax picks the draw; greedy rows keep their
logits. Rows whose request allows fewer new tokens than the batch's longest get EOS forced once
they reach their limit (the caller cuts the row there, so it still ends with 'length').
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


def sample_seed(seed: int, prompt: int, sample: int) -> int:
    """The generator seed of sample `sample` of prompt `prompt` of a request seeded `seed`: it
    depends on the sample's place in its own request only, never on the rest of the call."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, prompt, sample]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


@dataclass(frozen=True)
class RowDecoding:
    """How one row of a batch decodes. `seed` None draws from the global RNG (not reproducible)."""

    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    seed: int | None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


UNIFORM_BLOCK = 64  # decode steps whose random numbers are drawn (and copied to the device) at once


class RowSampler:
    """A transformers logits processor: per-row temperature, top-k, top-p and random stream."""

    def __init__(self, rows: Sequence[RowDecoding], prompt_width: int, eos_token_id: int) -> None:
        self.prompt_width = prompt_width
        self.eos_token_id = eos_token_id
        self.sampled = [i for i, row in enumerate(rows) if not row.greedy]
        chosen = [rows[i] for i in self.sampled]
        self.generators = [_generator(row.seed) for row in chosen]
        self.temperature = torch.tensor([row.temperature for row in chosen], dtype=torch.float32)
        self.top_k = [row.top_k for row in chosen]
        self.top_p = torch.tensor([row.top_p for row in chosen], dtype=torch.float32)
        self.limits = torch.tensor([row.max_new_tokens for row in rows], dtype=torch.long)
        self.uneven_limits = len({row.max_new_tokens for row in rows}) > 1
        # Per-step work stays on the device: what only depends on the rows is moved there once,
        # masks are index lists (boolean indexing waits for the device), and the rows' uniform
        # numbers are drawn UNIFORM_BLOCK steps at a time and copied over in one transfer.
        nucleus = [i for i, p in enumerate(self.top_p.tolist()) if p < 1]
        self._nucleus = nucleus
        self._plain = [i for i in range(len(chosen)) if i not in set(nucleus)]
        self._on: dict[torch.device, dict[str, torch.Tensor]] = {}
        self._uniform: torch.Tensor | None = None
        self._drawn = 0  # steps taken from the current block

    @staticmethod
    def needed(rows: Sequence[RowDecoding]) -> bool:
        """Whether a batch needs the processor (plain greedy batches of one limit do not)."""
        return any(not row.greedy for row in rows) or len({row.max_new_tokens for row in rows}) > 1

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_width  # tokens generated so far
        out = scores
        if self.sampled:
            rows = self._constants(scores.device)["rows"]
            tokens = self._draw(scores[rows].float())
            out = scores.clone()
            out[rows] = float("-inf")
            out[rows, tokens] = 0.0
        if self.uneven_limits:
            done = (self.limits <= step).nonzero().flatten()  # on the host: no device wait
            if len(done):
                done = done.to(scores.device)
                out = out.clone() if out is scores else out
                out[done] = float("-inf")
                out[done, self.eos_token_id] = 0.0
        return out

    def _constants(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The per-row settings on `device`, moved there once per generate call."""
        if device not in self._on:
            top_k = torch.tensor(self.top_k, dtype=torch.long)
            self._on[device] = {
                "rows": torch.tensor(self.sampled, dtype=torch.long, device=device),
                "temperature": self.temperature.to(device)[:, None],
                "top_p": self.top_p.to(device)[:, None],
                "top_k": top_k.to(device),
                "nucleus": torch.tensor(self._nucleus, dtype=torch.long, device=device),
                "plain": torch.tensor(self._plain, dtype=torch.long, device=device),
            }
        return self._on[device]

    def _next_uniform(self, device: torch.device) -> torch.Tensor:
        """Each sampled row's next number of its own stream, on `device`."""
        if self._uniform is None or self._drawn == UNIFORM_BLOCK or self._uniform.device != device:
            block = torch.stack([torch.rand(UNIFORM_BLOCK, generator=g) for g in self.generators])
            self._uniform, self._drawn = block.to(device), 0
        self._drawn += 1
        return self._uniform[:, self._drawn - 1]

    def _draw(self, logits: torch.Tensor) -> torch.Tensor:
        """One token per sampled row: temperature, then top-k, then top-p (the smallest set of
        most likely tokens whose mass reaches p), then the row's uniform draw."""
        device = logits.device
        constant = self._constants(device)
        logits = logits / constant["temperature"]
        if any(k > 0 for k in self.top_k):
            vocab = logits.shape[-1]
            largest = min(max(self.top_k), vocab)
            kth = torch.topk(logits, largest, dim=-1).values
            k = constant["top_k"].clamp(max=vocab)
            threshold = kth.gather(1, (k - 1).clamp(min=0)[:, None])
            threshold = torch.where(k[:, None] > 0, threshold, torch.full_like(threshold, float("-inf")))
            logits = logits.masked_fill(logits < threshold, float("-inf"))
        uniform = self._next_uniform(device)
        # Each row takes the path its own top_p says (never its batch's): the sorted order of
        # the nucleus and the vocabulary order map one uniform number to different tokens.
        tokens = torch.empty(len(self.generators), dtype=torch.long, device=device)
        if self._nucleus:
            nucleus = constant["nucleus"]
            ordered, order = torch.sort(logits[nucleus], dim=-1, descending=True, stable=True)
            probs = torch.softmax(ordered, dim=-1)
            before = torch.cumsum(probs, dim=-1) - probs  # mass of the more likely tokens
            probs = probs.masked_fill(before >= constant["top_p"][nucleus], 0.0)
            position = _invert(probs, uniform[nucleus])
            tokens[nucleus] = order.gather(1, position[:, None]).squeeze(1)
        if self._plain:
            plain = constant["plain"]
            tokens[plain] = _invert(torch.softmax(logits[plain], dim=-1), uniform[plain])
        return tokens


def _invert(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Per row, the first index whose cumulative mass exceeds uniform x total mass. A token of
    zero mass is never chosen: a product rounded up to the total falls back to the last token
    that has mass."""
    cumulative = torch.cumsum(probs, dim=-1)
    target = (uniform * cumulative[:, -1])[:, None]
    index = torch.searchsorted(cumulative, target, right=True).squeeze(1)
    last = probs.shape[-1] - 1 - torch.argmax((probs.flip(-1) > 0).to(torch.int8), dim=-1)
    return torch.minimum(index, last)


def _generator(seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
