"""`azr plan`'s update figure against the heap one real update uses, on CPU.

A SmolLM2-shaped random model (hidden 576, MLP 1536, 9/3 heads, 49k tied vocabulary; `--layers`
of them) gets one warm-up update (AdamW's moments exist afterwards), then a measured one while
a thread samples glibc's in-use heap (mallinfo2: arena bytes in use + mmapped blocks) every
half millisecond. The plan's update total less its runtime-overhead row is set against the
peak, and its transient part (everything but weights and AdamW state) against the rise over
the heap before the update. Each configuration runs in a fresh subprocess.

    python benchmarks/memory_plan.py [--layers 4 30] [--checkpointing off on] [--micro-batch 4]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import threading
import time


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _heap_in_use() -> int:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def child(args: argparse.Namespace) -> None:
    import torch

    import azr.engine.models.loading as models
    from azr.config.loading import build_config
    from azr.engine.rank.policy import Policy
    from azr.engine.api import TrainSequence
    from azr.ops.memory_plan import CPU_RUNTIME_OVERHEAD, GIB, plan_memory
    from azr.ops.model_facts import ModelFacts
    from azr.selfplay.task_types import GROUP_NAMES

    plain = models.tiny_config

    def shaped(*a, **k):  # tiny-random with the bundled model's layer shapes
        config = plain(*a, **k)
        config.hidden_size, config.intermediate_size = 576, 1536
        config.num_attention_heads, config.num_key_value_heads = 9, 3
        config.num_hidden_layers = args.layers
        return config

    models.tiny_config = shaped
    half = args.tokens // 2
    config = build_config("tiny", None, [
        "model.dtype=bfloat16", f"model.gradient_checkpointing={str(args.checkpointing == 'on').lower()}",
        f"trainer.micro_batch_size={args.micro_batch}", f"rollout.max_prompt_tokens={half}",
        f"rollout.content_max_tokens={half}", f"rollout.max_new_tokens={args.tokens - half}",
    ])
    policy = Policy.create(config, cpu=True)
    generator = torch.Generator().manual_seed(0)
    batch = [
        TrainSequence(torch.randint(3, 49000, (half,), generator=generator).tolist(),
                      torch.randint(3, 49000, (args.tokens - half,), generator=generator).tolist(),
                      GROUP_NAMES[i % len(GROUP_NAMES)], 1.0 if i % 2 else -1.0)
        for i in range(args.sequences)
    ]
    policy.update(batch)
    before = _heap_in_use()
    peak, done = [before], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _heap_in_use())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    policy.update(batch)
    done.set()
    sampler.join()
    facts = ModelFacts("shaped", args.layers, 576, 1536, 9, 3, 49152, True)
    plan = plan_memory(config, facts, 64 * GIB)
    resident = sum(i.update for i in plan.items if i.component.startswith(("weights", "optimizer")))
    planned = plan.update_total - CPU_RUNTIME_OVERHEAD
    mb = 2**20
    print(json.dumps({
        "layers": args.layers, "checkpointing": args.checkpointing, "micro_batch": args.micro_batch,
        "tokens": args.tokens, "sequences": args.sequences,
        "measured_peak_mb": round(peak[0] / mb), "planned_mb": round(planned / mb),
        "planned_over_measured": round(planned / peak[0], 3),
        "measured_rise_mb": round((peak[0] - before) / mb), "planned_transient_mb": round((planned - resident) / mb),
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[4])
    parser.add_argument("--checkpointing", choices=["off", "on"], nargs="+", default=["off", "on"])
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=512, help="prompt + response tokens per sequence")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.layers, args.checkpointing = args.layers[0], args.checkpointing[0]
        child(args)
        return
    print(f"one TRR++ update on CPU, {args.sequences} x {args.tokens} tokens, micro-batch {args.micro_batch}, "
          "fp32 master weights, bf16 autocast: planned vs measured heap")
    shared = ["--micro-batch", str(args.micro_batch), "--sequences", str(args.sequences), "--tokens", str(args.tokens)]
    for layers in args.layers:
        for mode in args.checkpointing:
            print(_run_child(["--layers", str(layers), "--checkpointing", mode, *shared]), flush=True)


def _run_child(argv: list[str]) -> dict:
    """One configuration in a fresh interpreter: its heap holds nothing from the others."""
    done = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"the configuration {' '.join(argv)} failed")
    return json.loads(done.stdout.strip().splitlines()[-1])

if __name__ == "__main__":
    main()
