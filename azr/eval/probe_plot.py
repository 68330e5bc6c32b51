"""The learning-curve PNG logged with a run: probe accuracy per task type (with 95% Wilson
intervals) above, the training rates (valid proposals, format) below, both against iteration.

matplotlib comes with MLflow; it is drawn headless (Agg), so no display is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from azr.eval.probe import PROBE_TYPES, ProbeResult

TRAINING_RATES = (("valid proposals", "overall/valid_rate"), ("format rate", "overall/format_rate"))


def plot_learning_curve(probes: Sequence[ProbeResult], history: Sequence[tuple[int, dict[str, float]]],
                        target: Path, title: str = "") -> Path:
    """Write the plot to `target` (PNG); `history` is (iteration, its metrics) pairs."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 6.5), sharex=True)
    try:
        ordered = sorted(probes, key=lambda p: p.step)
        for kind in [*(t.value for t in PROBE_TYPES), None]:
            if ordered and kind is not None and kind not in ordered[0].types.values():
                continue
            accuracies = [probe.accuracy(kind) for probe in ordered]
            steps = [probe.step for probe in ordered]
            values = [a.accuracy for a in accuracies]
            errors = [[max(0.0, a.accuracy - a.ci_low) for a in accuracies],  # rounding: 0 - 1e-17
                      [max(0.0, a.ci_high - a.accuracy) for a in accuracies]]
            top.errorbar(steps, values, yerr=errors, marker="o", capsize=3, label=kind or "all items",
                         linewidth=2.5 if kind is None else 1.2)
        top.set_ylabel("probe accuracy (greedy)")
        top.set_ylim(-0.02, 1.02)
        top.legend(loc="upper left", fontsize=8)
        top.set_title(title or "frozen probe: accuracy with 95% Wilson intervals")
        for label, key in TRAINING_RATES:
            points = [(step, metrics[key]) for step, metrics in history if key in metrics]
            if points:
                bottom.plot([s for s, _ in points], [v for _, v in points], marker=".", label=label)
        bottom.set_ylabel("training rate")
        bottom.set_xlabel("iteration (0: before training)")
        bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
        bottom.set_ylim(-0.02, 1.02)
        if bottom.get_lines():  # none before the first iteration (matplotlib warns about an empty legend)
            bottom.legend(loc="upper left", fontsize=8)
        figure.tight_layout()
        target.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(target, dpi=100)
    finally:
        plt.close(figure)
    return target
