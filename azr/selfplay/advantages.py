"""Task-Relative REINFORCE++ advantages (docs/algorithm.md §9.1).

Each sequence has one scalar reward; with gamma = 1 every response token carries it as its
return. Returns are whitened over all response tokens of one (task, role) group: the mean and
the variance are token-weighted, the variance has Bessel's correction over the group's token
count, and epsilon guards the division. A group whose rewards are all equal gets zero
advantage. There is one sample per prompt, so there are no per-prompt baselines.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

import numpy as np


@dataclass(frozen=True)
class GroupStats:
    mean: float  # token-weighted mean reward
    std: float  # sqrt of the Bessel-corrected token-weighted variance
    tokens: int


def whiten_group(
    rewards: Sequence[float], lengths: Sequence[int], eps: float = 1e-8
) -> tuple[np.ndarray, GroupStats]:
    """Per-sequence advantages (constant over a sequence's tokens) for one group."""
    r = np.asarray(rewards, dtype=np.float64)
    n = np.asarray(lengths, dtype=np.float64)
    if r.shape != n.shape:
        raise ValueError(f"{r.size} rewards but {n.size} lengths")
    if np.any(n < 0):
        raise ValueError("response lengths must be >= 0")
    tokens = float(n.sum())
    if r.size == 0 or tokens == 0:
        return np.zeros_like(r), GroupStats(0.0, 0.0, 0)
    mean = float((n * r).sum() / tokens)
    weighted = r[n > 0]
    if tokens <= 1 or np.all(weighted == weighted[0]):
        # One token, or one reward value: no spread, so no learning signal (and no 1e-13
        # residue from rounding in the mean).
        return np.zeros_like(r), GroupStats(mean, 0.0, int(tokens))
    variance = float((n * (r - mean) ** 2).sum() / tokens) * tokens / (tokens - 1)
    advantages = (r - mean) / np.sqrt(variance + eps)
    return advantages, GroupStats(mean, float(np.sqrt(variance)), int(tokens))


def trrpp_advantages(
    groups: Sequence[str],
    rewards: Sequence[float],
    lengths: Sequence[int],
    eps: float = 1e-8,
) -> tuple[np.ndarray, dict[str, GroupStats]]:
    """Advantages for a mixed batch, whitened separately within each group name."""
    names = np.asarray(groups, dtype=object)
    r = np.asarray(rewards, dtype=np.float64)
    n = np.asarray(lengths, dtype=np.float64)
    if not (names.size == r.size == n.size):
        raise ValueError(f"groups, rewards and lengths differ in size: {names.size}, {r.size}, {n.size}")
    advantages = np.zeros_like(r)
    stats: dict[str, GroupStats] = {}
    for name in dict.fromkeys(groups):
        mask = names == name
        advantages[mask], stats[name] = whiten_group(r[mask], n[mask], eps)
    return advantages, stats
