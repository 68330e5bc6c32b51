"""Does self-play on the CPU preset learn? A learning curve within a time budget.

Runs the preset's self-play iterations (the pipeline's stages, in this process, without Prefect)
for as many iterations as fit in `--minutes`, and after every `--probe-every`-th iteration
evaluates a frozen probe set: 24 fixed tasks (8 small programs, each as a deduction, an
abduction and an induction task), answered greedily with the run's own solve prompts and scored
in the sandbox. The probe is also evaluated on the untrained model first. It prints, per
iteration: the training format rate, valid-proposal rate and solver accuracy (sampled, on the
run's own tasks), and the probe's format rate and accuracy, each against iteration 1 and the
untrained model; the figures are also written to RUN_DIR/learning_curve.json.

    nice -n 10 python benchmarks/learning_curve.py --minutes 90 [--preset cpu] [-s key=value]

Timings are wall clock on whatever else the machine runs; the rates do not depend on them.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

from azr.config.schema import AZRConfig
from azr.config.loading import build_config
from azr.ops.monitors import learning_verdict, trend
from azr.pipeline.run_dir import open_run_dir
from azr.pipeline.stages import run_iteration
from azr.pipeline.run import close_resources, finish_iteration, open_resources
from azr.selfplay.task_records import InductionTask, Triplet
from azr.selfplay.task_types import TaskType

# Eight small programs, each with four inputs: the probe's deduction and abduction tasks use the
# first input, its induction task shows the first two pairs and hides the last two. Outputs are
# computed by the sandbox at start-up, never here.
PROBE_PROGRAMS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("def f(x):\n    return x * 3 + 1", ("2", "5", "0", "-4"), "Triple the number and add one."),
    ("def f(s):\n    return s[::-1]", ("'abc'", "'hello'", "'a'", "'xyz1'"), "Reverse the string."),
    ("def f(nums):\n    return sum(n for n in nums if n % 2 == 0)", ("[1, 2, 3, 4]", "[6, 7]", "[]", "[2, 2, 5]"),
     "Add up the even numbers."),
    ("def f(a, b):\n    return max(a, b) - min(a, b)", ("3, 8", "10, 4", "7, 7", "-2, 5"), "The distance between the two numbers."),
    ("def f(words):\n    return [w.upper() for w in words if len(w) > 2]", ("['a', 'cat', 'dog']", "['hi', 'yes']", "['sun']", "['ok', 'tree', 'x']"),
     "Upper-case the words longer than two letters."),
    ("def f(n):\n    total = 0\n    for i in range(n):\n        total += i\n    return total", ("4", "1", "6", "3"),
     "Sum of the numbers below n."),
    ("def f(d):\n    return sorted(d.keys())", ("{'b': 1, 'a': 2}", "{'z': 0}", "{'m': 1, 'c': 3, 'k': 2}", "{}"),
     "The keys of the dictionary in order."),
    ("def f(s):\n    return s.count('a')", ("'banana'", "'apple'", "'xyz'", "'aaa'"), "Count the letter a."),
)


@dataclass(frozen=True)
class Probe:
    tasks: dict[TaskType, list[Triplet | InductionTask]]


def build_probe(executor, types: list[TaskType]) -> Probe:  # noqa: ANN001 - any Executor
    """The frozen probe tasks, with gold outputs computed in the sandbox."""
    from azr.sandbox.api import ProgramRun

    results = executor.run([ProgramRun(program, inputs, check_determinism=False) for program, inputs, _ in PROBE_PROGRAMS])
    tasks: dict[TaskType, list] = {t: [] for t in types}
    for (program, inputs, message), result in zip(PROBE_PROGRAMS, results, strict=True):
        if not result.ok:
            raise RuntimeError(f"probe program failed in the sandbox: {result.first_failure}\n{program}")
        outputs = result.outputs
        triplet = Triplet(program, inputs[0], outputs[0])
        for task_type in types:
            if task_type is TaskType.INDUCTION:
                tasks[task_type].append(InductionTask(program, inputs, outputs, message))
            else:
                tasks[task_type].append(triplet)
    return Probe(tasks)


def evaluate_probe(res, probe: Probe) -> dict[str, float]:  # noqa: ANN001 - the run's RunContext
    """Greedy answers to every probe task with the run's solve prompts; format and accuracy."""
    from azr.engine.rollout.transformers_backend import SamplingSettings
    from azr.selfplay.prompts.paper import solve_prompt_for
    from azr.selfplay.solution_scoring import score_solutions

    settings = SamplingSettings(max_new_tokens=res.config.rollout.max_new_tokens, temperature=0.0)
    figures: dict[str, float] = {}
    formats, correct, total = 0, 0.0, 0
    for task_type, tasks in probe.tasks.items():
        prompts = [res.wrapper.wrap(solve_prompt_for(task_type, task, res.config.tasks.prompt_profile)) for task in tasks]
        responses = [c[0].text for c in res.policy.generate(prompts, settings)]
        outcomes = score_solutions(task_type, tasks, responses, res.executor, res.config.reward, res.wrapper.response_prefix)
        accuracy = [o.accuracy or 0.0 for o in outcomes]
        figures[f"probe/{task_type.value}_accuracy"] = sum(accuracy) / len(accuracy)
        figures[f"probe/{task_type.value}_format"] = sum(o.format_ok for o in outcomes) / len(outcomes)
        formats += sum(o.format_ok for o in outcomes)
        correct += sum(accuracy)
        total += len(outcomes)
    figures["probe/format_rate"] = formats / total
    figures["probe/accuracy"] = correct / total
    return figures


_COLUMNS = (("format", "overall/format_rate"), ("valid", "overall/valid_rate"), ("solve acc", "overall/solve_accuracy"),
            ("probe format", "probe/format_rate"), ("probe acc", "probe/accuracy"))


def _table(rows: list[dict]) -> str:
    header = f"{'iteration':>9} " + " ".join(f"{name:>12}" for name, _ in _COLUMNS) + f" {'groups w/ signal':>16} {'seconds':>8}"
    lines = [header]
    for row in rows:
        cells = " ".join(f"{row[key]:>12.3f}" if key in row else f"{'':>12}" for _, key in _COLUMNS)
        signal = f"{row['signal_groups']:>16.0f}" if "signal_groups" in row else f"{'':>16}"
        seconds = f"{row['seconds']:>8.0f}" if "seconds" in row else f"{'':>8}"
        lines.append(f"{row['iteration']:>9} {cells} {signal} {seconds}")
    return "\n".join(lines)


def _signal_groups(metrics: dict[str, float]) -> int:
    """Groups whose rewards were not all equal (so their TRR++ advantages are not all zero)."""
    return sum(1 for key, value in metrics.items() if key.endswith("/reward_std") and not key.startswith("overall") and value > 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=90.0, help="time budget of the whole benchmark")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--set", "-s", action="append", default=[], dest="overrides", help="section.key=value")
    parser.add_argument("--probe-every", type=int, default=2, help="evaluate the probe after every k-th iteration")
    parser.add_argument("--run-dir", type=Path, default=None, help="default: runs/learning-curve-<time>")
    args = parser.parse_args()
    started = time.monotonic()
    budget = args.minutes * 60.0

    config: AZRConfig = build_config(args.preset, overrides=[*args.overrides, "trainer.iterations=100000"])
    root = args.run_dir or Path("runs") / f"learning-curve-{time.strftime('%Y%m%d-%H%M%S')}"
    run, config = open_run_dir(root, config, resume=False)
    res = open_resources(run, config)
    rows: list[dict] = []
    history: list[dict[str, float]] = []
    try:
        probe = build_probe(res.executor, list(config.tasks.types))
        probe_started = time.monotonic()
        untrained = evaluate_probe(res, probe)
        probe_seconds = time.monotonic() - probe_started
        rows.append({"iteration": "untrained", **untrained, "seconds": probe_seconds})
        print(_table(rows), flush=True)
        step, iteration_seconds = 0, 0.0
        while True:
            elapsed = time.monotonic() - started
            if step and elapsed + iteration_seconds + probe_seconds > budget:
                break
            step += 1
            iteration_started = time.monotonic()
            run_iteration(res, step)
            metrics = finish_iteration(res, step)
            iteration_seconds = time.monotonic() - iteration_started
            history.append(metrics)
            row = {"iteration": str(step), **{k: v for k, v in metrics.items() if k.startswith("overall/")},
                   "signal_groups": _signal_groups(metrics), "seconds": iteration_seconds}
            remaining = budget - (time.monotonic() - started)
            last_possible = remaining < 2 * iteration_seconds + probe_seconds
            if step == 1 or step % args.probe_every == 0 or last_possible:
                probe_started = time.monotonic()
                row.update(evaluate_probe(res, probe))
                probe_seconds = time.monotonic() - probe_started
            rows.append(row)
            print(_table(rows[-1:]).splitlines()[-1], flush=True)
    finally:
        close_resources(res)
    probed = [r for r in rows[1:] if "probe/accuracy" in r]
    summary = {
        "preset": args.preset, "overrides": args.overrides, "iterations": len(history), "minutes": (time.monotonic() - started) / 60,
        "rows": rows, "verdict": learning_verdict(history),
        "trend_per_iteration": {key: trend([m.get(key, 0.0) for m in history]) for _, key in _COLUMNS[:3]},
        "probe_trend_per_iteration": trend([r["probe/accuracy"] for r in probed]) if len(probed) > 1 else 0.0,
    }
    (run.root / "learning_curve.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print("\n" + _table(rows))
    first = rows[1] if len(rows) > 1 else {}
    last = probed[-1] if probed else {}
    print(f"\nprobe accuracy: untrained {untrained['probe/accuracy']:.3f}, iteration 1 {first.get('probe/accuracy', float('nan')):.3f}, "
          f"iteration {last.get('iteration', '-')} {last.get('probe/accuracy', float('nan')):.3f}")
    print(summary["verdict"])
    print(f"figures: {run.root / 'learning_curve.json'}")


if __name__ == "__main__":
    main()
