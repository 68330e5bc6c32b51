"""Does self-play on the cpu preset learn within a time budget? The probe's curve, with controls.

Two arms, one after the other, each the preset's own pipeline (the engine process, the sandbox,
every stage; no Prefect or MLflow):

- "train": the preset as given (plus `-s` changes) for `--minutes`;
- "updates off": the same with learning rate 1e-12 (the schema needs > 0; AdamW's step is then
  ~1e-12, far below the fp32 spacing of the weights, so they do not change) for
  `--control-minutes`: what the probe does when nothing is learned (greedy decoding of the same
  weights should give the same answers: any change there is noise of the measurement).

Both start with the probe on the untrained model (step 0): the untrained score. The probe is the
preset's frozen set (trainer.probe_file, 48 tasks never trained on), answered greedily every
`--probe-every` iterations and after the last iteration that fits the budget. Each arm ends with
the run's own verdict: an exact McNemar test on the same items before and after
(azr/eval/learning_verdict.py). Per iteration it prints the training rates (sampled, on the
run's own tasks) and, where probed, the probe accuracy with its 95% Wilson interval; the arms'
figures go to RUN_ROOT/learning_curve.json and each arm's plot to RUN_ROOT/ARM/probe/learning_curve.png.

    nice -n 10 python benchmarks/learning_curve.py --minutes 60 --control-minutes 10 [-s key=value]

Timings are wall clock on whatever else the machine runs; the probe results do not depend on them,
but how many iterations fit does.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from azr.config.loading import build_config
from azr.pipeline.probe_run import probe_if_due, read_probe_results, run_learning_verdict, write_plot
from azr.pipeline.run import close_resources, finish_iteration, open_resources
from azr.pipeline.run_dir import open_run_dir
from azr.pipeline.stages import run_iteration

UPDATES_OFF = "trainer.learning_rate=1e-12"
RATES = (("format", "overall/format_rate"), ("valid", "overall/valid_rate"), ("solve acc", "overall/solve_accuracy"))


def run_arm(name: str, preset: str, overrides: list[str], minutes: float, probe_every: int, root: Path) -> dict[str, Any]:
    """Iterations of one arm within `minutes`, probed at 0, every `probe_every` and at the end."""
    started = time.monotonic()
    budget = minutes * 60.0
    config = build_config(preset, overrides=[*overrides, "trainer.iterations=100000", f"trainer.probe_every={probe_every}",
                                             "tracking.system_metrics=false"])
    run, config = open_run_dir(root / name, config, resume=False)
    res = open_resources(run, config)
    rows: list[dict[str, Any]] = []
    try:
        probe_started = time.monotonic()
        probe_if_due(res, 0)
        probe_s = time.monotonic() - probe_started
        rows.append({"iteration": 0, **_probe_figures(run, 0), "seconds": probe_s})
        print(f"[{name}] {_line(rows[-1])}", flush=True)
        step, iteration_s = 0, 0.0
        while True:
            step += 1
            iteration_started = time.monotonic()
            run_iteration(res, step)
            metrics = finish_iteration(res, step)
            iteration_s = time.monotonic() - iteration_started
            remaining = budget - (time.monotonic() - started)
            last = remaining < iteration_s + 2 * probe_s
            probe_started = time.monotonic()
            probed = probe_if_due(res, step, last_step=step if last else None)  # the last is always probed
            if probed:
                probe_s = time.monotonic() - probe_started
            row = {"iteration": step, **{key: metrics.get(key) for _, key in RATES}, "seconds": iteration_s}
            if probed:
                row.update(_probe_figures(run, step))
            rows.append(row)
            print(f"[{name}] {_line(row)}", flush=True)
            if last:
                break
    finally:
        close_resources(res)
    plot = write_plot(run, step)
    verdict = run_learning_verdict(run)
    return {"arm": name, "overrides": overrides, "iterations": step, "minutes": (time.monotonic() - started) / 60,
            "probe_seconds": probe_s, "rows": rows, "verdict": verdict.line(), "label": verdict.label,
            "p_value": verdict.p_value, "improved": verdict.improved, "worsened": verdict.worsened,
            "plot": str(plot) if plot else None, "run_dir": str(run.root)}


def _probe_figures(run: Any, step: int) -> dict[str, Any]:
    result = next(r for r in read_probe_results(run) if r.step == step)
    overall = result.accuracy()
    figures = {"probe": overall.correct, "probe_items": overall.total, "probe_ci": (overall.ci_low, overall.ci_high)}
    for kind in ("deduction", "abduction", "induction"):
        figures[f"probe_{kind}"] = result.accuracy(kind).correct
    return figures


def _line(row: dict[str, Any]) -> str:
    rates = "  ".join(f"{label} {row[key]:.2f}" for label, key in RATES if row.get(key) is not None)
    probe = ""
    if "probe" in row:
        low, high = row["probe_ci"]
        probe = (f"  probe {row['probe']}/{row['probe_items']} (95% CI {low:.2f}-{high:.2f}; "
                 f"ded {row['probe_deduction']}, abd {row['probe_abduction']}, ind {row['probe_induction']})")
    return f"iteration {row['iteration']:>3}  {rates}{probe}  {row['seconds']:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="time budget of the training arm")
    parser.add_argument("--control-minutes", type=float, default=10.0, help="time budget of the updates-off arm (0: skip)")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--set", "-s", action="append", default=[], dest="overrides", help="section.key=value")
    parser.add_argument("--probe-every", type=int, default=5)
    parser.add_argument("--run-root", type=Path, default=None, help="default: runs/learning-curve-<time>")
    args = parser.parse_args()
    root = args.run_root or Path("runs") / f"learning-curve-{time.strftime('%Y%m%d-%H%M%S')}"
    arms = [run_arm("train", args.preset, args.overrides, args.minutes, args.probe_every, root)]
    if args.control_minutes > 0:
        arms.append(run_arm("updates-off", args.preset, [*args.overrides, UPDATES_OFF], args.control_minutes,
                            args.probe_every, root))
    root.mkdir(parents=True, exist_ok=True)
    (root / "learning_curve.json").write_text(json.dumps(arms, indent=2), encoding="utf-8")
    print()
    for arm in arms:
        print(f"{arm['arm']}: {arm['iterations']} iterations in {arm['minutes']:.1f} min (probe {arm['probe_seconds']:.0f} s)")
        print(f"  {arm['verdict']}")
        print(f"  plot: {arm['plot']}")
    print(f"figures: {root / 'learning_curve.json'}")


if __name__ == "__main__":
    main()
