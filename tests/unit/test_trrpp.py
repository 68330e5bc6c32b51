"""TRR++ advantages (docs/algorithm.md §9.1) against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from azr.selfplay.advantages import trrpp_advantages, whiten_group


def test_two_groups_with_different_lengths_match_hand_computation() -> None:
    groups = ["deduction_solve", "deduction_solve", "abduction_propose", "abduction_propose", "abduction_propose"]
    rewards = [1.0, -0.5, 0.625, -1.0, -0.5]
    lengths = [3, 1, 2, 2, 4]
    advantages, stats = trrpp_advantages(groups, rewards, lengths, eps=1e-8)

    # deduction_solve: tokens 3 + 1 = 4, mean = (3*1 + 1*-0.5)/4 = 0.625
    # biased var = (3*(0.375)^2 + 1*(1.125)^2)/4 = (0.421875 + 1.265625)/4 = 0.421875
    # Bessel: * 4/3 = 0.5625 -> std 0.75
    assert stats["deduction_solve"].mean == pytest.approx(0.625)
    assert stats["deduction_solve"].std == pytest.approx(0.75)
    assert advantages[0] == pytest.approx(0.375 / math.sqrt(0.5625 + 1e-8))
    assert advantages[1] == pytest.approx(-1.125 / math.sqrt(0.5625 + 1e-8))

    # abduction_propose: tokens 8, mean = (2*0.625 - 2*1 - 4*0.5)/8 = -2.75/8 = -0.34375
    mean = -0.34375
    deviations = np.array([0.625, -1.0, -0.5]) - mean
    var = (2 * deviations[0] ** 2 + 2 * deviations[1] ** 2 + 4 * deviations[2] ** 2) / 8 * 8 / 7
    assert stats["abduction_propose"].mean == pytest.approx(mean)
    np.testing.assert_allclose(advantages[2:], deviations / math.sqrt(var + 1e-8))
    assert stats["abduction_propose"].tokens == 8


def test_token_weighted_mean_is_zero_per_group() -> None:
    rng = np.random.default_rng(0)
    groups = ["a"] * 7 + ["b"] * 5
    rewards = rng.choice([-1.0, -0.5, 0.25, 1.0], size=12)
    lengths = rng.integers(1, 50, size=12)
    advantages, _ = trrpp_advantages(groups, rewards, lengths)
    for name in "ab":
        mask = np.array(groups) == name
        assert np.sum(advantages[mask] * lengths[mask]) == pytest.approx(0.0, abs=1e-9)


def test_group_with_constant_reward_gets_zero() -> None:
    advantages, stats = whiten_group([0.1, 0.1, 0.1], [5, 2, 9])
    assert np.all(advantages == 0.0)
    assert stats.std == 0.0


def test_groups_do_not_share_a_baseline() -> None:
    adv_alone, _ = whiten_group([1.0, -1.0], [2, 2])
    adv_mixed, _ = trrpp_advantages(["x", "x", "y", "y"], [1.0, -1.0, 100.0, 50.0], [2, 2, 1, 1])
    np.testing.assert_allclose(adv_mixed[:2], adv_alone)


def test_degenerate_inputs() -> None:
    assert whiten_group([], [])[0].size == 0
    assert np.all(whiten_group([1.0], [1])[0] == 0.0)
    with pytest.raises(ValueError):
        whiten_group([1.0, 2.0], [1])
    with pytest.raises(ValueError):
        trrpp_advantages(["a"], [1.0, 2.0], [1, 1])
