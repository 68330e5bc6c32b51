"""The cost of the controller-engine split per iteration, against the in-process path it replaced.

One iteration's engine work is replayed both ways on the same model and the same inputs: the
propose, Monte-Carlo (n samples) and solve generations, the TRR++ update, the weight-sync
check and a checkpoint. In process, the calls go to a `Policy`; split, they go through
`EngineClient` to a 1-rank engine started with `accelerate launch` (prompts and completions
as Parquet files, commands as JSON on a socket). The split's own cost is measured directly
per call (round trip minus the time the engine reports for the command), and the difference
of the two iterations' medians is printed too (noisier: it includes the compute's jitter).

    python benchmarks/engine_split.py [--preset tiny] [--repeats 5] [--prompts 12] [--prompt-tokens 700]

Figures are medians over the repeats; other jobs on the machine make them noisy.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def iteration_calls(policy: Any, prompts: list[str], args: argparse.Namespace, root: Path, step: int) -> list[tuple[str, float]]:
    """One iteration's engine calls; (name, seconds) of each, measured by the caller."""
    from azr.engine.generation import SamplingSettings
    from azr.engine.update import TrainSequence
    from azr.task_types import GROUP_NAMES

    timed: list[tuple[str, float]] = []

    def call(name: str, fn: Any, *a: Any) -> Any:
        start = time.perf_counter()
        result = fn(*a)
        timed.append((name, time.perf_counter() - start))
        return result

    settings = SamplingSettings(max_new_tokens=args.new_tokens, temperature=1.0, seed=step)
    proposals = call("generate propose", policy.generate, prompts, settings)
    mc = SamplingSettings(max_new_tokens=args.new_tokens, temperature=1.0, n=args.mc_samples, seed=step + 1)
    for part in range(3):  # one Monte-Carlo call per task type
        call("generate mc", policy.generate, prompts[part::3], mc)
    solutions = call("generate solve", policy.generate, prompts, settings)
    sequences = [TrainSequence(c[0].prompt_token_ids, c[0].token_ids, GROUP_NAMES[i % len(GROUP_NAMES)], 1.0 if i % 2 else -1.0)
                 for i, c in enumerate(proposals + solutions) if c[0].token_ids]
    call("update", policy.update, sequences)
    call("sync", policy.sync_rollout_weights)
    call("checkpoint", policy.save_checkpoint, root / "checkpoints", step, {"update": {}})
    return timed


def measure(policy: Any, prompts: list[str], args: argparse.Namespace, root: Path) -> list[list[tuple[str, float]]]:
    iteration_calls(policy, prompts, args, root, 0)  # warm-up (allocator, oneDNN kernels)
    return [iteration_calls(policy, prompts, args, root, step) for step in range(1, args.repeats + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", help="tiny (random tiny model) or cpu (the bundled model)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=12, help="prompts of each generation call")
    parser.add_argument("--prompt-tokens", type=int, default=700, help="about how long each prompt is")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--mc-samples", type=int, default=4)
    args = parser.parse_args()

    from azr.config_loader import build_config
    from azr.engine.client import EngineClient
    from azr.engine.policy import Policy

    config = build_config(args.preset, overrides=["trainer.processes=1", "trainer.keep_checkpoints=1"])
    root = Path(tempfile.mkdtemp(prefix="azr-engine-split-"))

    policy = Policy.create(config, cpu=True)
    words = "def f(a, b):\n    return sorted(set(a) | set(b))[::-1]\n"
    text = words * max(1, args.prompt_tokens // max(1, len(policy.tokenizer(words)["input_ids"])))
    prompts = [f"# task {i}\n{text}" for i in range(args.prompts)]
    inproc = measure(policy, prompts, args, root / "in-process")
    del policy

    client = EngineClient.start(config, root / "split")
    engine_seconds: list[float] = []
    original = client._request

    def recording(command: dict, setting: str) -> dict:  # the engine's own time for each command
        reply = original(command, setting)
        engine_seconds.append(float(reply["elapsed_s"]))
        return reply

    client._request = recording  # type: ignore[method-assign]
    try:
        split = measure(client, prompts, args, root / "split")
    finally:
        client.close()
    calls = len(split[0])
    engine_seconds = engine_seconds[calls:]  # drop the warm-up

    in_total = [sum(s for _, s in it) for it in inproc]
    split_total = [sum(s for _, s in it) for it in split]
    overhead = [sum(s for _, s in it) - sum(engine_seconds[i * calls:(i + 1) * calls]) for i, it in enumerate(split)]
    median_in, median_split, median_overhead = (statistics.median(v) for v in (in_total, split_total, overhead))
    print(f"preset {args.preset}: {args.prompts} prompts of ~{args.prompt_tokens} tokens per generation, "
          f"{args.new_tokens} new tokens, {calls} engine calls per iteration, median of {args.repeats}")
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


if __name__ == "__main__":
    main()
