"""Accuracy with a 95% Wilson score interval, and the exact McNemar test for paired results.

Benchmarks are small (164 HumanEval problems, a subset of CRUXEval during training), so the
interval matters when comparing checkpoints; Wilson's stays inside [0, 1] and behaves at 0 and
100%, where the normal approximation collapses to a zero-width interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Accuracy:
    correct: int
    total: int
    ci_low: float
    ci_high: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def describe(self) -> str:
        """'41.3% (95% CI 37.9-44.8%, 330/800)'."""
        return (f"{100 * self.accuracy:.1f}% (95% CI {100 * self.ci_low:.1f}-{100 * self.ci_high:.1f}%, "
                f"{self.correct}/{self.total})")


def wilson_interval(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion; (0, 1) when there is no data."""
    if total < 0 or not 0 <= correct <= max(total, 0):
        raise ValueError(f"need 0 <= correct <= total, got {correct}/{total}")
    if total == 0:
        return 0.0, 1.0
    p = correct / total
    z2 = z * z
    denominator = 1 + z2 / total
    centre = (p + z2 / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_of(flags: list[bool]) -> Accuracy:
    correct, total = sum(bool(f) for f in flags), len(flags)
    low, high = wilson_interval(correct, total)
    return Accuracy(correct, total, low, high)


def mcnemar_exact(improved: int, worsened: int) -> float:
    """Two-sided exact McNemar p-value for paired right/wrong results of the same items.

    Only the discordant items count: `improved` went wrong -> right, `worsened` right -> wrong.
    Under "no change" each discordant item is a fair coin, so the p-value is twice the binomial
    tail of the smaller count (capped at 1). With n discordant items the smallest possible
    p-value is 2 * 0.5**n: fewer than 6 can never reach 0.05.
    """
    if improved < 0 or worsened < 0:
        raise ValueError(f"counts must be non-negative, got {improved} and {worsened}")
    n = improved + worsened
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(improved, worsened) + 1)) / 2**n
    return min(1.0, 2 * tail)
