"""The update over engine ranks on CPU (gloo): tokens/s at 1 and 2 ranks (ddp, fsdp), each
rank's peak RSS, and each rank's parameter + AdamW-state bytes (FSDP2 should hold about 1/N of
DDP's).

Each layout runs as a fresh `torchrun --standalone` group on the tiny model (or `--model`),
with the machine's cores split evenly over the ranks (torch threads per rank = cores / ranks),
so 1 and 2 ranks use the same CPU. One warm-up update, then `--steps` timed updates of the same
batch; the figure is the median step (rank 0's clock; the ranks leave each step together).
`--repeats` whole launches per layout; the median over them is printed.

    python benchmarks/scaling.py [--steps 5] [--repeats 2] [--sequences 16] [--tokens 256] [--model tiny-random]

Section `split` (`--section split`, also part of `all`): the cost of the controller-engine split
per iteration against the in-process path it replaced. One iteration's engine work (propose,
Monte-Carlo and solve generations, the update, the weight-sync check, a checkpoint) runs on an
in-process `Policy` and through `EngineClient` to a 1-rank engine under `accelerate launch`; the
split's own cost is each call's round trip minus the time the engine reports for it.

On a shared machine the timings are noisy: compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LAYOUTS = [(1, "ddp"), (2, "ddp"), (2, "fsdp")]


def rank_main(args: argparse.Namespace) -> None:
    """One rank of a layout: build the policy, time the updates, report from rank 0."""
    import torch

    from azr.config.loading import build_config
    from azr.engine.training.distributed import all_gather_objects
    from azr.engine.rank.policy import Policy
    from azr.engine.api import TrainSequence
    from azr.selfplay.task_types import GROUP_NAMES

    world = int(os.environ.get("WORLD_SIZE", "1"))
    config = build_config("tiny", overrides=[
        f"model.name_or_path={args.model}",
        f"trainer.strategy={args.strategy}",
        f"trainer.processes={world}",
        f"trainer.micro_batch_size={args.micro_batch}",
    ])
    policy = Policy.create(config, cpu=True)
    generator = torch.Generator().manual_seed(0)
    vocab = len(policy.tokenizer)
    response = args.tokens // 2
    batch = [
        TrainSequence(
            torch.randint(3, vocab, (args.tokens - response,), generator=generator).tolist(),
            torch.randint(3, vocab, (response,), generator=generator).tolist(),
            GROUP_NAMES[i % len(GROUP_NAMES)],
            1.0 if i % 2 else -1.0,
        )
        for i in range(args.sequences)
    ]
    policy.update(batch)  # warm-up: allocator, oneDNN, AdamW state
    steps = [policy.update(batch) for _ in range(args.steps)]
    state_bytes = _local_bytes(policy.model.parameters()) + _local_bytes(
        t for s in policy.optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)
    )
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_rank = all_gather_objects({"state_mb": state_bytes / 2**20, "peak_rss_mb": rss_mb})
    if policy.rank == 0:
        Path(args.out).write_text(json.dumps({
            "step_s": statistics.median(m.seconds for m in steps),
            "tokens": steps[0].tokens,
            "ranks": per_rank,
        }))


def _local_bytes(tensors) -> int:
    """Bytes this rank holds: a DTensor's local shard, a plain tensor whole."""
    from torch.distributed.tensor import DTensor

    total = 0
    for tensor in tensors:
        local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
        total += local.numel() * local.element_size()
    return total


def launch(ranks: int, strategy: str, args: argparse.Namespace) -> dict:
    threads = max(1, (os.cpu_count() or 1) // ranks)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(threads),
               "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
                   __file__, "--rank", "--strategy", strategy, "--out", str(out), *_shared(args)]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{ranks} x {strategy} failed:\n{done.stderr[-4000:]}")
        return json.loads(out.read_text())


def _iteration_calls(policy: Any, prompts: list[str], args: argparse.Namespace, root: Path, step: int) -> list[tuple[str, float]]:
    """One iteration's engine calls; (name, seconds) of each, measured by the caller."""
    from azr.engine.api import SamplingSettings
    from azr.engine.api import TrainSequence
    from azr.selfplay.task_types import GROUP_NAMES

    timed: list[tuple[str, float]] = []

    def call(name: str, fn: Any, *a: Any) -> Any:
        start = time.perf_counter()
        result = fn(*a)
        timed.append((name, time.perf_counter() - start))
        return result

    settings = SamplingSettings(max_new_tokens=args.split_new_tokens, temperature=1.0, seed=step)
    proposals = call("generate propose", policy.generate, prompts, settings)
    mc = SamplingSettings(max_new_tokens=args.split_new_tokens, temperature=1.0, n=args.split_mc_samples, seed=step + 1)
    for part in range(3):  # one Monte-Carlo call per task type
        call("generate mc", policy.generate, prompts[part::3], mc)
    solutions = call("generate solve", policy.generate, prompts, settings)
    sequences = [TrainSequence(c[0].prompt_token_ids, c[0].token_ids, GROUP_NAMES[i % len(GROUP_NAMES)], 1.0 if i % 2 else -1.0)
                 for i, c in enumerate(proposals + solutions) if c[0].token_ids]
    call("update", policy.update, sequences)
    call("sync", policy.sync_rollout_weights)
    call("checkpoint", policy.save_checkpoint, root / "checkpoints", step, {"update": {}})
    return timed


def _measure_iterations(policy: Any, prompts: list[str], args: argparse.Namespace, root: Path) -> list[list[tuple[str, float]]]:
    _iteration_calls(policy, prompts, args, root, 0)  # warm-up (allocator, oneDNN kernels)
    return [_iteration_calls(policy, prompts, args, root, step) for step in range(1, args.split_repeats + 1)]


def split_section(args: argparse.Namespace) -> None:
    """The controller-engine split against the in-process Policy (see the module docstring)."""
    from azr.config.loading import build_config
    from azr.engine.controller.client import EngineClient
    from azr.engine.rank.policy import Policy

    config = build_config(args.split_preset, overrides=["trainer.processes=1", "trainer.keep_checkpoints=1"])
    root = Path(tempfile.mkdtemp(prefix="azr-engine-split-"))

    policy = Policy.create(config, cpu=True)
    words = "def f(a, b):\n    return sorted(set(a) | set(b))[::-1]\n"
    text = words * max(1, args.split_prompt_tokens // max(1, len(policy.tokenizer(words)["input_ids"])))
    prompts = [f"# task {i}\n{text}" for i in range(args.split_prompts)]
    inproc = _measure_iterations(policy, prompts, args, root / "in-process")
    del policy

    client = EngineClient.start(config, root / "split")
    engine_seconds: list[float] = []
    original = client._request

    def recording(command: dict, setting: str) -> dict:  # the engine's own time for each command
        reply = original(command, setting)
        if command["cmd"] != "shutdown":
            engine_seconds.append(float(reply["elapsed_s"]))
        return reply

    client._request = recording  # type: ignore[method-assign]
    try:
        split = _measure_iterations(client, prompts, args, root / "split")
    finally:
        client.close()
    calls = len(split[0])
    engine_seconds = engine_seconds[calls:]  # drop the warm-up

    in_total = [sum(s for _, s in it) for it in inproc]
    split_total = [sum(s for _, s in it) for it in split]
    overhead = [sum(s for _, s in it) - sum(engine_seconds[i * calls:(i + 1) * calls]) for i, it in enumerate(split)]
    median_in, median_split, median_overhead = (statistics.median(v) for v in (in_total, split_total, overhead))
    print(f"preset {args.split_preset}: {args.split_prompts} prompts of ~{args.split_prompt_tokens} tokens per generation, "
          f"{args.split_new_tokens} new tokens, {calls} engine calls per iteration, median of {args.split_repeats}")
    print(f"  in process (Policy):          {median_in:8.3f} s per iteration's engine work")
    print(f"  split (EngineClient, 1 rank): {median_split:8.3f} s")
    print(f"  difference of the medians:    {median_split - median_in:+8.3f} s ({100 * (median_split - median_in) / median_in:+.2f}%)")
    print(f"  split cost, measured per call (round trip - engine time): {median_overhead * 1000:.1f} ms per iteration, "
          f"{median_overhead * 1000 / calls:.2f} ms per call")
    print(f"  = {100 * median_overhead / median_in:.3f}% of this iteration's engine work; the CPU preset's "
          f"iteration (~210 s, ENVIRONMENT.md) would pay {100 * median_overhead / 210:.4f}%")
    by_call: dict[str, list[float]] = {}
    for it in split:
        for name, seconds in it:
            by_call.setdefault(name, []).append(seconds)
    print("  per call (split, median s): " + ", ".join(f"{k} {statistics.median(v):.3f}" for k, v in by_call.items()))


def _shared(args: argparse.Namespace) -> list[str]:
    return ["--steps", str(args.steps), "--sequences", str(args.sequences), "--tokens", str(args.tokens),
            "--micro-batch", str(args.micro_batch), "--model", args.model]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=256, help="prompt + response tokens per sequence")
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--section", choices=["ranks", "split", "all"], default="all",
                        help="ranks: the update at 1 and 2 ranks; split: the controller-engine split's cost")
    parser.add_argument("--split-preset", default="tiny", help="split: tiny (random tiny model) or cpu (bundled model)")
    parser.add_argument("--split-repeats", type=int, default=5, help="split: timed iterations (after one warm-up)")
    parser.add_argument("--split-prompts", type=int, default=6, help="split: prompts of each generation call")
    parser.add_argument("--split-prompt-tokens", type=int, default=300, help="split: about how long each prompt is")
    parser.add_argument("--split-new-tokens", type=int, default=8)
    parser.add_argument("--split-mc-samples", type=int, default=2)
    parser.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", default="ddp", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank:
        rank_main(args)
        return
    if args.section in ("ranks", "all"):
        ranks_section(args)
    if args.section in ("split", "all"):
        split_section(args)


def ranks_section(args: argparse.Namespace) -> None:
    """Tokens/s, per-rank state bytes and peak RSS of the update at 1 and 2 ranks."""
    print(f"update of {args.sequences} x {args.tokens} tokens ({args.tokens // 2} trained), micro-batch "
          f"{args.micro_batch}, {args.model}, {os.cpu_count()} cores split over the ranks; median of "
          f"{args.steps} steps x {args.repeats} launches")
    rows = []
    for ranks, strategy in LAYOUTS:
        runs = [launch(ranks, strategy, args) for _ in range(args.repeats)]
        step_s = statistics.median(r["step_s"] for r in runs)
        rows.append({
            "ranks": ranks, "strategy": strategy, "step_s": step_s,
            "tokens_per_s": runs[0]["tokens"] / step_s,
            "state_mb_per_rank": max(r["state_mb"] for r in runs[0]["ranks"]),
            "peak_rss_mb_per_rank": max(statistics.median(r["ranks"][k]["peak_rss_mb"] for r in runs)
                                        for k in range(ranks)),
        })
    base = rows[0]
    print(f"{'layout':<10} {'step s':>8} {'tok/s':>8} {'vs 1':>6} {'param+adam MB/rank':>19} {'vs ddp':>7} "
          f"{'peak RSS MB/rank':>17}")
    ddp_state = {r["ranks"]: r["state_mb_per_rank"] for r in rows if r["strategy"] == "ddp"}
    for row in rows:
        print(f"{row['ranks']} x {row['strategy']:<6} {row['step_s']:8.3f} {row['tokens_per_s']:8.0f} "
              f"{row['tokens_per_s'] / base['tokens_per_s']:6.2f} {row['state_mb_per_rank']:19.1f} "
              f"{row['state_mb_per_rank'] / ddp_state[row['ranks']]:7.2f} {row['peak_rss_mb_per_rank']:17.0f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
