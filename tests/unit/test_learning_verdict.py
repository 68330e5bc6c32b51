"""The end-of-run verdict: a paired exact test on the frozen probe that says "learned" only when
the data cannot be chance, and "cannot tell" when there is too little to go on."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from azr.config.loading import build_config
from azr.eval.learning_verdict import FEW_ITEMS, FEW_ITERATIONS, LEARNED, NO_CHANGE, NO_PROBE, WORSE, learning_verdict
from azr.eval.probe import PROBE_TYPES, ProbeFileError, ProbeResult, load_probe_set, probe_due, probe_metrics
from azr.eval.scoring.stats import mcnemar_exact
from azr.selfplay.prompts.small import EXAMPLE_PROGRAM
from azr.selfplay.seed_tasks import resolve_seed_path


def _result(step: int, flags: list[bool]) -> ProbeResult:
    ids = [f"item-{i:03d}" for i in range(len(flags))]
    kinds = [PROBE_TYPES[i % 3].value for i in range(len(flags))]
    return ProbeResult(step, dict(zip(ids, flags)), dict(zip(ids, kinds)))


def test_exact_mcnemar_matches_the_binomial_by_hand() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(6, 0) == pytest.approx(2 / 64)
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)  # 0.0625: five of five is not enough
    assert mcnemar_exact(10, 2) == pytest.approx(2 * sum(math.comb(12, k) for k in range(3)) / 2**12)
    assert mcnemar_exact(7, 7) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_exact_mcnemar_agrees_with_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for improved, worsened in [(3, 0), (9, 2), (4, 11), (20, 14), (1, 1)]:
        expected = stats.binomtest(improved, improved + worsened, 0.5).pvalue
        assert mcnemar_exact(improved, worsened) == pytest.approx(expected)


def test_a_real_improvement_says_learned() -> None:
    before = [i < 10 for i in range(48)]  # 10 of 48 right
    after = [i < 24 for i in range(48)]  # 14 more right, none lost
    verdict = learning_verdict(_result(0, before), _result(20, after))
    assert verdict.label == LEARNED and verdict.p_value < 0.001
    assert (verdict.improved, verdict.worsened) == (14, 0)
    line = verdict.line()
    assert line.startswith("learning: learned") and "10/48 -> 24/48" in line and "McNemar p" in line


def test_a_real_decline_says_got_worse() -> None:
    verdict = learning_verdict(_result(0, [i < 30 for i in range(48)]), _result(20, [i < 12 for i in range(48)]))
    assert verdict.label == WORSE


def test_noise_never_says_learned() -> None:
    """A model that did not change, answering with noise: each item has its own chance of being
    right, and before and after are independent draws of it. Over 400 such runs the 5% test may
    fire by chance in a few (its error rate), never as a rule; a naive "rate rose" reading would
    say yes in about half of them."""
    rng = random.Random(0)
    labels, rose = [], 0
    for _ in range(400):
        chances = [rng.choice([0.05, 0.3, 0.6, 0.9]) for _ in range(48)]
        before = [rng.random() < c for c in chances]
        after = [rng.random() < c for c in chances]
        rose += sum(after) > sum(before)
        labels.append(learning_verdict(_result(0, before), _result(20, after)).label)
    assert rose > 150
    assert labels.count(LEARNED) <= 16  # at most ~4%: the one-sided share of a two-sided 5% test, with slack
    assert labels.count(NO_CHANGE) >= 360


def test_the_issue_s_two_iteration_rise_is_not_learning() -> None:
    """46% -> 54% of 24 samples, the "learning: yes" of the issue: on paired items that is 2 more right."""
    before = [i < 11 for i in range(24)]
    after = [i < 13 for i in range(24)]
    verdict = learning_verdict(_result(0, before), _result(2, after))
    assert verdict.label == FEW_ITERATIONS and verdict.p_value == pytest.approx(0.5)
    assert "learned" not in verdict.line()


def test_too_few_items_or_iterations_cannot_tell() -> None:
    assert learning_verdict(_result(0, [False] * 5), _result(30, [True] * 5)).label == FEW_ITEMS  # p = 0.0625 at best
    assert learning_verdict(_result(0, [False] * 48), None).label == FEW_ITERATIONS
    assert learning_verdict(_result(0, [False] * 48), _result(0, [True] * 48)).label == FEW_ITERATIONS
    assert learning_verdict(None, _result(5, [True] * 48)).label == NO_PROBE
    small_change = learning_verdict(_result(0, [i < 10 for i in range(48)]), _result(3, [i < 12 for i in range(48)]))
    assert small_change.label == FEW_ITERATIONS  # p >= 0.05 after 3 iterations says nothing
    # ... but a clear change is significant however few the iterations
    assert learning_verdict(_result(0, [False] * 48), _result(2, [i < 20 for i in range(48)])).label == LEARNED


def test_probe_metrics_carry_wilson_intervals() -> None:
    metrics = probe_metrics(_result(5, [i % 2 == 0 for i in range(48)]))
    for kind in ("deduction", "abduction", "induction", "overall"):
        assert metrics[f"probe/{kind}/ci_low"] <= metrics[f"probe/{kind}/accuracy"] <= metrics[f"probe/{kind}/ci_high"]
    assert metrics["probe/overall/accuracy"] == 0.5 and metrics["probe/overall/items"] == 48


def test_probe_schedule() -> None:
    config = build_config("cpu")
    assert config.trainer.probe_every == 5 and config.trainer.probe_file is not None
    assert [s for s in range(0, 13) if probe_due(config, s, last_step=12)] == [0, 5, 10, 12]
    assert not probe_due(build_config("tiny"), 0, 2)  # off unless configured


def test_the_shipped_probe_set_is_frozen_and_never_a_seed() -> None:
    config = build_config("cpu")
    items = load_probe_set(config.trainer.probe_file)
    assert {kind: sum(i.task_type is kind for i in items) for kind in PROBE_TYPES} == {k: 16 for k in PROBE_TYPES}
    seeds = set()
    for name in (config.buffer.seed_io_file, config.buffer.seed_induction_file):
        seeds |= {json.loads(line)["snippet"] for line in resolve_seed_path(Path(name)).read_text().splitlines()}
    assert not seeds & {item.task.program for item in items}
    assert EXAMPLE_PROGRAM not in {item.task.program for item in items}


def test_a_bad_probe_file_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ProbeFileError, match="probe file not found"):
        load_probe_set(tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "task_type": "deduction", "program": "def f(a):\\n    return a"}\n')
    with pytest.raises(ProbeFileError, match="bad.jsonl:1"):
        load_probe_set(bad)
    bad.write_text('{"id": "a", "task_type": "deduction", "program": "def f(a):\\n    return a", "input": "1", "output": "1"}\n' * 2)
    with pytest.raises(ProbeFileError, match="ids repeat"):
        load_probe_set(bad)


def test_the_learning_curve_plot_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from azr.eval.probe_plot import plot_learning_curve

    probes = [_result(0, [False] * 48), _result(5, [i < 14 for i in range(48)]), _result(6, [True] * 48)]  # 0 and 100% too
    history = [(s, {"overall/valid_rate": 0.1 * s, "overall/format_rate": 0.5}) for s in range(1, 6)]
    target = plot_learning_curve(probes, history, tmp_path / "curve.png")
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 5000
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the probe before training: no iterations yet, and no warning printed
        plot_learning_curve(probes[:1], [], tmp_path / "first.png")
