"""One-shot check of the multi-rank GPU paths on two NVIDIA GPUs, in about 15 minutes.

NOT RUN YET on GPUs: written without them (issue 22: items 4, 5 and the NCCL weight transfer).
Same format as benchmarks/vllm_gpu_check.py: every step in a process of its own under its own
limit, one `AZR-GPU-CHECK {json}` line per step, a summary line last. Steps (limit):

- probe (45 s), model (60 s): as in the one-GPU check.
- two_ranks (240 s): the engine on 2 FSDP2 ranks over NCCL with colocated vLLM (one engine per
  rank, sleep level 2): generate, update, generate. Checks that each rank's process holds a
  CUDA context on its own GPU only (a weight sync run in a helper thread without the rank's
  device would open one on GPU 0: item 4), and the greedy output against transformers.
- long_wait (150 s): 2 ranks with a vLLM server beside them; a generate call of about a minute
  while rank 1 waits in one collective, under engine.collective_timeout_s=120 (item 5: the
  rule is collective > generate timeout, so a long call must finish, not trip NCCL's watchdog).
- nccl_transfer (180 s): one trainer rank on GPU 0, a `vllm serve` process on GPU 1
  (rollout.gpus=1), weights through vLLM's weight-transfer API over NCCL: generate, update,
  sync, generate, checked against transformers.
- async_overlap (300 s): sync against one-step-off self-play (`rollout.async_level` 0 and 1),
  trainer on GPU 0 and a `vllm serve` process on GPU 1: iteration seconds, each side's idle
  seconds, lag and mismatch (benchmarks/async_overlap.py). Checks the lags (0 and 1); the
  speed-up is reported against the issue's goal of 1.3x, not asserted.

    PYTHONPATH=. python benchmarks/vllm_gpu_check_2gpu.py [--model DIR] [--work DIR]

Exit code: 0 when every step passed, 1 when one failed, 2 with fewer than two GPUs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.vllm_gpu_check_steps import (  # noqa: E402 - after the path
    GPUMemory,
    async_overlap,
    Step,
    check_config,
    gpu_processes,
    model_dir,
    plan_figures,
    prepare_model,
    probe_versions,
    prompts_for,
    script_main,
    share_equal,
    update_round,
)

MATCH = 0.75


def two_ranks(args: argparse.Namespace) -> dict[str, Any]:
    from azr.engine.controller.client import EngineClient
    from azr.engine.api import SamplingSettings

    work = Path(args.work)
    config = check_config(model_dir(work), "trainer.gpus=2", "trainer.processes=2", "trainer.strategy=fsdp",
                          "rollout.vllm.mode=colocate", "rollout.tensor_parallel_size=1",
                          "rollout.vllm.sleep_level=2", "rollout.gpu_memory_utilization=0.3")
    run = work / "two-ranks"
    with GPUMemory() as memory:
        engine = EngineClient.start(config, run)
        try:
            rounds = update_round(engine, run)
            engine.generate(prompts_for(engine.tokenizer), SamplingSettings(max_new_tokens=24, temperature=1.0, n=4, seed=3))
            contexts = _contexts_per_rank([int(r["pid"]) for r in engine.ranks])
        finally:
            engine.close()
    return {
        "sync_s": rounds.sync_s, "gpus_per_rank": contexts, "peak_mib_per_gpu": memory.peak,
        "greedy_equal_to_reference": share_equal(rounds.after, rounds.reference), **plan_figures(config),
        "checks": {
            "each_rank_on_one_gpu": all(len(gpus) == 1 for gpus in contexts.values()) and len(contexts) == 2,
            "ranks_on_different_gpus": len({tuple(g) for g in contexts.values()}) == 2,
            **rounds.checks(MATCH),
        },
    }


def _contexts_per_rank(pids: list[int]) -> dict[str, list[str]]:
    """The GPUs on which each rank's process holds memory (nvidia-smi's compute processes)."""
    rows = gpu_processes()
    return {str(pid): sorted({row["gpu"] for row in rows if row["pid"] == str(pid)}) for pid in pids}


def long_wait(args: argparse.Namespace) -> dict[str, Any]:
    from azr.engine.controller.client import EngineClient
    from azr.engine.api import SamplingSettings

    work = Path(args.work)
    config = check_config(model_dir(work), "trainer.gpus=2", "trainer.processes=2", "trainer.strategy=fsdp",
                          "rollout.vllm.mode=server", "rollout.vllm.weight_transfer=files",
                          "rollout.gpu_memory_utilization=0.3", "rollout.max_new_tokens=2048",
                          "engine.collective_timeout_s=120", "engine.generate_timeout_s=110",
                          "engine.update_timeout_s=110", "engine.checkpoint_timeout_s=110")
    run = work / "long-wait"
    engine = EngineClient.start(config, run)
    try:
        prompts = prompts_for(engine.tokenizer, 64)
        started = time.monotonic()
        out = engine.generate(prompts, SamplingSettings(max_new_tokens=2048, temperature=1.0, n=8, seed=1))
        seconds = time.monotonic() - started
        alive = engine.ping()
    finally:
        engine.close()
    return {
        "generate_s": round(seconds, 1), "completions": sum(len(g) for g in out),
        "checks": {"long_generate_finished": len(out) == len(prompts), "engine_alive_after": bool(alive)},
    }


def nccl_transfer(args: argparse.Namespace) -> dict[str, Any]:
    from azr.engine.controller.client import EngineClient

    work = Path(args.work)
    config = check_config(model_dir(work), "trainer.gpus=2", "trainer.processes=1", "rollout.vllm.mode=server",
                          "rollout.gpus=1", "rollout.vllm.weight_transfer=nccl")
    with GPUMemory() as memory:
        engine = EngineClient.start(config, work / "nccl-transfer")
        try:
            rounds = update_round(engine, work / "nccl-transfer")
        finally:
            engine.close()
    return {"sync_s": rounds.sync_s, "peak_mib_per_gpu": memory.peak,
            "greedy_equal_to_reference": share_equal(rounds.after, rounds.reference), **plan_figures(config),
            "checks": rounds.checks(MATCH)}


STEPS = [
    Step("probe", 45, probe_versions),
    Step("model", 60, prepare_model),
    Step("two_ranks", 240, two_ranks, needs=("probe", "model")),
    Step("long_wait", 150, long_wait, needs=("probe", "model")),
    Step("nccl_transfer", 180, nccl_transfer, needs=("probe", "model")),
    Step("async_overlap", 300, async_overlap, needs=("probe", "model")),
]


def main(argv: list[str] | None = None) -> int:
    return script_main(__file__, __doc__ or "", STEPS, 2, argv)


if __name__ == "__main__":
    sys.exit(main())
