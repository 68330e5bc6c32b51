"""Speed and peak memory of one TRR++ update on the bundled model.

Each configuration runs in a fresh subprocess, so its peak RSS (ru_maxrss, the kernel's
high-water mark) covers exactly: Python + torch, the model with fp32 master weights, AdamW
state, and one update on 8 sequences of 512 tokens (prompt + response) with bf16 compute.
The first update (allocator and oneDNN warm-up) and a second, steady one are timed. Beside the
peak RSS it prints what `azr plan` predicts for the update phase of the same batch.

    python benchmarks/update_step.py [--micro-batch 4] [--checkpointing both] [--tokens 512] [--response 256]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(args: argparse.Namespace) -> None:
    import torch

    from azr.config.loading import build_config
    from azr.engine.rank.policy import Policy
    from azr.engine.api import TrainSequence
    from azr.selfplay.task_types import GROUP_NAMES

    config = build_config("cpu")
    config.model.dtype = args.dtype
    config.model.gradient_checkpointing = args.checkpointing
    config.trainer.micro_batch_size = args.micro_batch
    started = time.perf_counter()
    policy = Policy.create(config, cpu=True)
    load_s = time.perf_counter() - started
    rss_loaded = _rss_mb()
    generator = torch.Generator().manual_seed(0)
    vocab = len(policy.tokenizer)
    prompt_len = args.tokens - args.response
    batch = [
        TrainSequence(
            torch.randint(3, vocab, (prompt_len,), generator=generator).tolist(),
            torch.randint(3, vocab, (args.response,), generator=generator).tolist(),
            GROUP_NAMES[i % len(GROUP_NAMES)],
            1.0 if i % 2 else -1.0,
        )
        for i in range(args.sequences)
    ]
    first = policy.update(batch)
    second = policy.update(batch)
    result = {
        "dtype": str(policy.compute_dtype).removeprefix("torch."),
        "micro_batch": args.micro_batch,
        "checkpointing": args.checkpointing,
        "sequences": args.sequences,
        "tokens_per_sequence": args.tokens,
        "response_tokens": args.response,
        "load_s": round(load_s, 1),
        "first_step_s": round(first.seconds, 1),
        "step_s": round(second.seconds, 1),
        "total_tokens_per_s": round(args.sequences * args.tokens / second.seconds, 1),
        "response_tokens_per_s": round(second.tokens / second.seconds, 1),
        "rss_after_load_mb": round(rss_loaded),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "planned_update_mb": round(_planned_update_bytes(config, args) / 2**20),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


def _planned_update_bytes(config, args: argparse.Namespace) -> float:
    """What `azr plan` says the update phase needs for exactly this batch (every sequence
    `--tokens` long, as the plan's worst case assumes), for comparison with the peak RSS."""
    from azr.config.loading import build_config
    from azr.ops.memory_plan import GIB, plan_memory
    from azr.ops.model_facts import model_facts

    prompt = args.tokens - args.response
    same = build_config(base=config, overrides=[
        f"rollout.max_prompt_tokens={prompt}", f"rollout.content_max_tokens={prompt}",
        f"rollout.max_new_tokens={args.response}",
    ])
    return plan_memory(same, model_facts(same.model.name_or_path), 64 * GIB).update_total


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=512, help="prompt + response tokens per sequence")
    parser.add_argument("--response", type=int, default=256, help="response tokens per sequence")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--micro-batch", type=int, nargs="+", default=[4], help="the cpu preset's is 4")
    parser.add_argument(
        "--checkpointing", choices=["off", "on", "both"], default="both",
        help="gradient checkpointing of the decoder layers (the cpu preset has it off)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.response >= args.tokens:
        parser.error("--response must be smaller than --tokens (a prompt needs at least one token)")
    if args.child:
        args.micro_batch = args.micro_batch[0]
        args.checkpointing = args.checkpointing == "on"
        child(args)
        return
    print(f"one TRR++ update, bundled SmolLM2-135M-Instruct, {args.sequences} x {args.tokens} tokens "
          f"({args.response} response), fp32 master weights, {args.dtype} compute")
    modes = ["off", "on"] if args.checkpointing == "both" else [args.checkpointing]
    for micro in args.micro_batch:
        for mode in modes:
            command = [
                sys.executable, __file__, "--child", "--sequences", str(args.sequences), "--tokens",
                str(args.tokens), "--response", str(args.response), "--dtype", args.dtype,
                "--micro-batch", str(micro), "--checkpointing", mode,
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"micro-batch {micro}, checkpointing {mode}: the child failed")
            print(json.loads(done.stdout.strip().splitlines()[-1]), flush=True)


if __name__ == "__main__":
    main()
