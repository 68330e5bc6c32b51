"""The off-policy gap at lag 0 on this machine (docs/algorithm.md §14): how far the rollout engine's
behaviour log-probs of sampled tokens are from the trainer's log-probs of the same tokens, with
the same weights, per dtype. This is the floor under `off_policy/mismatch_mean` of a sync run,
and what `monitor.max_logprob_mismatch` must stay well above.

The bundled model (cpu preset), transformers backend: `--prompts` chat prompts, 2 sampled
completions each (temperature 1, `--new-tokens`), for `--repeats` seeds; for each dtype it prints
the median over the repeats of the mean and largest |logp_rollout - logp_trainer| and the 1st and
99th percentiles of the ratio exp(logp_trainer - logp_rollout).

    PYTHONPATH=. python benchmarks/logprob_gap.py [--dtypes float32 bfloat16] [--prompts 8] [--new-tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

QUESTIONS = [
    "Write a Python function that returns the n-th Fibonacci number.",
    "What does sorted([3, 1, 2])[::-1] return? Think step by step.",
    "Write a Python function that reverses the words of a sentence.",
    "Explain what a hash map is in two sentences.",
]


def measure(dtype: str, prompts: int, new_tokens: int, repeats: int) -> dict[str, float]:
    from azr.config.loading import build_config
    from azr.engine.rank.policy import Policy
    from azr.engine.api import SamplingSettings
    from azr.engine.api import TrainSequence
    from azr.selfplay.prompts.chat_format import ChatWrapper

    config = build_config("cpu", None, [f"model.dtype={dtype}", "model.gradient_checkpointing=false"])
    policy = Policy.create(config, cpu=True)
    wrapper = ChatWrapper(policy.tokenizer)
    texts = [wrapper.wrap(QUESTIONS[i % len(QUESTIONS)] + f" (variant {i})") for i in range(prompts)]
    rows = []
    for seed in range(repeats):
        started = time.perf_counter()
        samples = policy.generate(texts, SamplingSettings(max_new_tokens=new_tokens, temperature=1.0, n=2, seed=seed))
        completions = [c for group in samples for c in group]
        trainer = policy.updater.sequence_logprobs(
            [TrainSequence(c.prompt_token_ids, c.token_ids, "deduction_solve", 0.0) for c in completions])
        delta = np.concatenate([np.asarray(t) - np.asarray(c.logprobs) for c, t in zip(completions, trainer)])
        ratio = np.exp(delta)
        rows.append({"mismatch_mean": float(np.abs(delta).mean()), "mismatch_max": float(np.abs(delta).max()),
                     "ratio_p01": float(np.percentile(ratio, 1)), "ratio_p99": float(np.percentile(ratio, 99)),
                     "tokens": float(delta.size), "seconds": time.perf_counter() - started})
    policy.close()
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base = None
    for dtype in args.dtypes:  # each printed as soon as it is measured (a shared machine may stop the run)
        r = measure(dtype, args.prompts, args.new_tokens, args.repeats)
        base = r["mismatch_mean"] if base is None else base
        print(f"{dtype:9s} mean |dlogp| {r['mismatch_mean']:.2e} ({r['mismatch_mean'] / base if base else float('nan'):.0f}x "
              f"{args.dtypes[0]}), max {r['mismatch_max']:.2e}, ratio p01 {r['ratio_p01']:.4f} p99 {r['ratio_p99']:.4f}, "
              f"{r['tokens']:.0f} tokens, {r['seconds']:.1f} s per repeat (medians of {args.repeats})", flush=True)


if __name__ == "__main__":
    main()
