"""Reward rules (docs/algorithm.md §7), as pure functions of already-computed verdicts.

Rewards are sequence-level scalars; the engine places them on the last response token.
"""

from __future__ import annotations

from collections.abc import Sequence

from azr.config.schema import RewardConfig
from azr.sandbox.api import Verdict
from azr.selfplay.task_types import TaskType


def solve_accuracy(task_type: TaskType, verdict: Verdict, induction_scoring: str = "binary") -> float | None:
    """A solution's accuracy in [0, 1]; None when the check could not be run at all.

    Induction compares several hidden pairs: `binary` needs all of them (the paper),
    `accuracy` is the fraction, `if_one_correct` needs one.
    """
    fraction = verdict.accuracy
    if fraction is None or task_type is not TaskType.INDUCTION:
        return fraction
    if induction_scoring == "binary":
        return 1.0 if verdict.all_correct else 0.0
    if induction_scoring == "if_one_correct":
        return 1.0 if verdict.matched > 0 else 0.0
    return fraction


def solver_reward(format_ok: bool, accuracy: float | None, config: RewardConfig) -> float:
    """-1 for a broken format (even if right), the accuracy if > 0, else -0.5 (docs/algorithm.md §7.1).

    A check that could not run (None) counts as wrong, as the original's `none_count`.
    """
    if not format_ok:
        return config.format_error
    if accuracy is not None and accuracy > 0:
        return float(accuracy)
    return config.wrong_answer


def mean_accuracy(accuracies: Sequence[float | None]) -> float:
    """Mean over the rollouts that could be scored; 0 when none could (docs/algorithm.md §6.3, §7.2)."""
    scored = [a for a in accuracies if a is not None]
    return sum(scored) / len(scored) if scored else 0.0


def learnability(solve_rate: float) -> float:
    """1 - solve rate for tasks the solver sometimes gets right; 0 for always or never."""
    return 1.0 - solve_rate if 0.0 < solve_rate < 1.0 else 0.0


def proposer_reward(valid: bool, format_ok: bool, solve_rate: float, config: RewardConfig) -> float:
    """-1 if invalid or badly formatted; the learnability if > 0; else the `learnability_zero`
    mapping: -0.5 as in the original code (issue #37), or 0 as in the paper's Eq. 4."""
    if not valid or not format_ok:
        return config.format_error
    value = learnability(solve_rate)
    if value > 0:
        return value
    return config.wrong_answer if config.learnability_zero == "code" else 0.0
