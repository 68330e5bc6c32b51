"""The probe inside a training run: when it is due, where its results live, what it logs.

Each probe is written once to `probe/NNNNNN.json` in the run directory (step 0: before
training), then logged to MLflow at that step with the learning-curve PNG; a resume finds the
file and only logs what is missing, and never probes a step again with weights that moved on.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

from azr.eval.learning_verdict import LearningVerdict, learning_verdict
from azr.eval.probe import ProbeItem, ProbeResult, evaluate_probe, load_probe_set, probe_due, probe_metrics
from azr.pipeline.atomic_io import atomic_write_json
from azr.pipeline.run_dir import RunDir

logger = logging.getLogger(__name__)

PROBE_DIR = "probe"
PLOT_NAME = "learning_curve.png"


def probe_path(run: RunDir, step: int) -> Path:
    return run.root / PROBE_DIR / f"{step:06d}.json"


def read_probe_results(run: RunDir) -> list[ProbeResult]:
    """Every probe of the run, by step; an unreadable file is skipped with a warning."""
    results = []
    for path in sorted((run.root / PROBE_DIR).glob("[0-9]*.json")):
        try:
            results.append(ProbeResult.from_dict(json.loads(path.read_text(encoding="utf-8"))["result"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("probe result %s is unreadable (%s); left out of the curve and the verdict", path, exc)
    return sorted(results, key=lambda r: r.step)


@functools.lru_cache(maxsize=4)
def _items(path: str) -> tuple[ProbeItem, ...]:
    return tuple(load_probe_set(path))


def probe_if_due(res: Any, step: int, tracker: Any = None, *, current: bool = True,
                 last_step: int | None = None) -> dict[str, float]:
    """Probe the policy of the run context `res` at `step` when due (0: before training) and log it once.

    `current` says the policy holds the weights of `step` (false for a committed iteration a
    resume finishes after later updates): a missing probe is then skipped with a warning.
    `last_step` (default the run's last iteration) is always probed.
    """
    config = res.config
    if not probe_due(config, step, res.last_step if last_step is None else last_step):
        return {}
    path = probe_path(res.run, step)
    record = _read(path)
    if not record:
        if not current:
            logger.warning("iteration %d: its probe was never done and cannot be now (the policy has moved on)", step)
            return {}
        res.emit("stage_started", step=max(step, 1), stage="probe")
        result = evaluate_probe(res.policy, _items(str(config.trainer.probe_file)), config, res.executor, res.wrapper, step)
        record = {"result": result.as_dict(), "metrics": probe_metrics(result), "logged": False}
        atomic_write_json(path, record)
    if tracker is not None and not record.get("logged"):
        tracker.log_metrics(step, record["metrics"], once=True)
        plot = write_plot(res.run, step)
        if plot is not None:
            tracker.client.log_artifact(tracker.run_id, str(plot), PROBE_DIR)
        record["logged"] = True
        atomic_write_json(path, record)
    return record["metrics"]


def write_plot(run: RunDir, upto: int) -> Path | None:
    """The learning curve of the probes and the iterations so far, as probe/learning_curve.png."""
    from azr.ops.monitors import metrics_history

    try:
        from azr.eval.probe_plot import plot_learning_curve
    except ImportError as exc:  # matplotlib comes with MLflow; a slimmed install may lack it
        logger.warning("no learning-curve plot: %s", exc)
        return None
    history = list(enumerate(metrics_history(run, upto), 1))
    return plot_learning_curve(read_probe_results(run), history, run.root / PROBE_DIR / PLOT_NAME,
                               title=f"{run.root.name}: frozen probe, 95% Wilson intervals")


def run_learning_verdict(run: RunDir) -> LearningVerdict:
    """The paired test between the probe before training and the last probe."""
    results = read_probe_results(run)
    before = next((r for r in results if r.step == 0), None)
    after = results[-1] if results and results[-1].step > 0 else None
    return learning_verdict(before, after)


def _read(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("probe record %s is unreadable (%s); probing again", path, exc)
        return {}
    return record if isinstance(record, dict) and "result" in record and "metrics" in record else {}
