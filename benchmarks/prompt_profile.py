"""How well a model follows the answer format under a prompt profile and sampling settings,
measured on the first iteration's prompts without any update (cheap: generation + sandbox).

For each variant (a list of `--set` overrides over a preset) it runs the stages of iteration 1
up to the rewards (build prompts, propose, validate in the sandbox, Monte-Carlo solves, solve,
rewards) in a scratch run directory, with one model shared by all variants, and prints per
group: format rate, valid-proposal rate or solver accuracy, and whether the group's rewards vary
(a group whose rewards are all equal gets zero TRR++ advantages, so it teaches nothing).

    python benchmarks/prompt_profile.py --preset cpu \
        --variant paper:tasks.prompt_profile=paper --variant small:tasks.prompt_profile=small
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from azr.config.loading import build_config
from azr.pipeline import stages
from azr.pipeline.run_dir import open_run_dir
from azr.pipeline.run import close_resources, open_resources
from azr.selfplay.task_types import GROUP_NAMES

_STAGES = (stages.build_prompts, stages.propose, stages.validate, stages.mc_rollouts, stages.solve, stages.rewards)


def measure_variant(preset: str, overrides: list[str], policy, executor, seed: int) -> tuple[list[dict], float]:  # noqa: ANN001
    """Per-group figures of iteration 1 under the overrides; the seconds it took."""
    config = build_config(preset, overrides=[*overrides, f"seed={seed}"])
    root = Path(tempfile.mkdtemp(prefix="azr-profile-")) / "run"
    run, config = open_run_dir(root, config, resume=False, force=False)
    res = open_resources(run, config, policy=policy, executor=executor)
    started = time.perf_counter()
    try:
        for stage in _STAGES:
            stage(res, 1)
    finally:
        close_resources(res)
    seconds = time.perf_counter() - started
    read = lambda name: pd.read_parquet(run.stage_path(1, name))  # noqa: E731
    validated, solutions, scored = read("validated.parquet"), read("solutions.parquet"), read("scored.parquet")
    rows = []
    for group in GROUP_NAMES:
        rewards = scored.loc[scored["group"] == group, "reward"]
        if group.endswith("_propose"):
            part = validated[validated["group"] == group]
            rate = float(part["valid"].mean()) if len(part) else 0.0
        else:
            part = solutions[solutions["group"] == group]
            rate = float(part["accuracy"].fillna(0.0).mean()) if len(part) else 0.0
        rows.append({"group": group, "n": len(part), "format": float(part["format_ok"].mean()) if len(part) else 0.0,
                     "valid|acc": rate, "reward_mean": float(rewards.mean()) if len(rewards) else 0.0,
                     "signal": bool(rewards.nunique() > 1)})
    return rows, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME:key=value,key=value (overrides over the preset); repeatable")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="run seeds; each variant runs once per seed")
    args = parser.parse_args()
    variants = [(v.split(":", 1)[0], [o for o in v.split(":", 1)[1].split(",") if o]) for v in args.variant] or [("preset", [])]

    from azr.engine.rank.policy import Policy
    from azr.sandbox import SandboxExecutor

    base = build_config(args.preset)
    policy = Policy.create(base, cpu=True)
    executor = SandboxExecutor.from_run_config(base)
    try:
        for name, overrides in variants:
            for seed in args.seeds:
                rows, seconds = measure_variant(args.preset, overrides, policy, executor, seed)
                signal = sum(r["signal"] for r in rows)
                print(f"\n== {name} seed {seed} ({', '.join(overrides) or 'preset as is'}): "
                      f"{signal}/6 groups with varying rewards, {seconds:.0f} s", flush=True)
                print(pd.DataFrame(rows).round(3).to_string(index=False), flush=True)
    finally:
        executor.close()


if __name__ == "__main__":
    main()
