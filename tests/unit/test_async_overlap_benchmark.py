"""benchmarks/async_overlap.py and its GPU check step without a GPU or vLLM: the figures it
derives from a run's records, the medians, the ratio, and what the GPU step asserts."""

from __future__ import annotations

import pytest

from benchmarks.async_overlap import IterationFigures, iteration_figures, speedup, summary
from benchmarks.vllm_gpu_check_2gpu import STEPS
from benchmarks.vllm_gpu_check_steps import async_overlap_checks


def test_idle_seconds_are_the_iteration_less_each_sides_busy_time() -> None:
    timings = {"build_prompts": 0.1, "generate_propose_solve": 3.0, "mc_rollouts": 2.0, "validate": 0.5, "update": 4.0}
    figures = iteration_figures(6.0, timings, {"off_policy": {"policy_lag": 1.0, "mismatch_mean": 2e-3}})
    assert figures == IterationFigures(6.0, 2.0, 1.0, 1.0, 2e-3)
    # a side busier than the wall time (overlap counted twice by rounding) is never negative
    assert iteration_figures(3.0, {"update": 4.0}, {}).trainer_idle_s == 0.0
    assert iteration_figures(3.0, {}, {}).lag is None  # an update without records: no figure


def test_medians_and_the_ratio_say_cannot_tell_without_iterations() -> None:
    sync = summary([IterationFigures(10.0, 4.0, 6.0, 0.0, 1e-3), IterationFigures(12.0, 5.0, 7.0, 0.0, None),
                    IterationFigures(11.0, 4.5, 6.5, 0.0, 3e-3)])
    assert sync == {"iteration_s": 11.0, "trainer_idle_s": 4.5, "rollout_idle_s": 6.5, "lag": 0.0, "mismatch": 2e-3,
                    "iterations": 3.0}
    faster = summary([IterationFigures(8.0, 1.0, 2.0, 1.0, 2e-3)])
    assert speedup(sync, faster) == pytest.approx(11.0 / 8.0)
    assert speedup(sync, summary([])) is None and summary([])["lag"] is None


def test_the_gpu_step_checks_the_lags_not_the_speed() -> None:
    sync = {"lag": 0.0, "iterations": 4.0, "iteration_s": 10.0}
    assert all(async_overlap_checks(sync, {"lag": 1.0, "iterations": 4.0, "iteration_s": 20.0}).values())  # slower: still ok
    assert not async_overlap_checks(sync, {"lag": 0.0, "iterations": 4.0})["one_step_off_lag_1"]
    assert not async_overlap_checks(sync, {"lag": 1.0, "iterations": 3.0})["both_measured"]
    assert not async_overlap_checks({"lag": None, "iterations": 0.0}, {"lag": 1.0, "iterations": 0.0})["both_measured"]


def test_the_two_gpu_check_runs_the_step_after_probe_and_model() -> None:
    step = next(step for step in STEPS if step.name == "async_overlap")
    assert step.needs == ("probe", "model") and step.timeout_s <= 600
