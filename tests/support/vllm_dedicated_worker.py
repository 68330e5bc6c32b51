"""One engine rank of the dedicated-server test: `torchrun --nproc-per-node N vllm_dedicated_worker.py
OUT MODEL_DIR VLLM_PYTHON TRANSFER` builds `Policy.create` (FSDP2 over gloo, CPU) with
`rollout.backend vllm` in server mode, so rank 0 starts a vLLM server that every rank feeds.

It checks, collectively: greedy output from the server equals the transformers backend's on
the same (gathered) weights before and after an update; then it stops the server with SIGSTOP
and times the next sync, which must fail with a clear error within rollout.vllm.sync_timeout_s;
then it closes the policy. Rank 0 writes OUT/result.json.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch

from azr.config.loading import build_config
from azr.engine.training.checkpoints import full_model_state_dict
from azr.engine.api import SamplingSettings
from azr.engine.rollout.transformers_backend import TransformersBackend
from azr.engine.rank.policy import Policy
from azr.engine.api import TrainSequence

PROMPTS = ["def f(a):", "x = 1\nprint(", "# add two numbers\n", "import", "class A:"]
SYNC_TIMEOUT_S = 20.0


def greedy(backend: object, prompts: list[str]) -> list[list[int]]:
    settings = SamplingSettings(max_new_tokens=8, temperature=0.0)
    return [list(group[0].token_ids) for group in backend.generate(prompts, settings)]  # type: ignore[attr-defined]


def reference(policy: Policy, model_dir: str) -> list[list[int]] | None:
    """The transformers backend on the policy's current weights, gathered from the shards
    (collective); rank 0's answer, None elsewhere."""
    from transformers import AutoModelForCausalLM

    state = full_model_state_dict(policy.model)
    if policy.rank != 0:
        return None
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.load_state_dict(state)
    return greedy(TransformersBackend(model.eval(), policy.tokenizer), PROMPTS)


def main(out: Path, model_dir: str, vllm_python: str, transfer: str) -> None:
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    config = build_config("tiny", overrides=[
        f"model.name_or_path={model_dir}", "model.dtype=float32", "trainer.strategy=fsdp",
        f"trainer.processes={world}", "trainer.micro_batch_size=2", "trainer.learning_rate=0.01",
        "rollout.backend=vllm", "rollout.vllm.mode=server", "rollout.vllm.enforce_eager=true",
        f"rollout.vllm.python={vllm_python}", "rollout.vllm.cpu_kv_cache_gib=1",
        f"rollout.vllm.weight_transfer={transfer}", f"rollout.vllm.sync_timeout_s={SYNC_TIMEOUT_S}",
        "rollout.max_prompt_tokens=256", "rollout.content_max_tokens=200",
    ])
    policy = Policy.create(config, cpu=True, rollout_dir=out / "rollout")
    result: dict = {"world_size": world, "transfer": policy.backend.transfer_kind}
    result["before"] = greedy(policy, PROMPTS)
    result["before_reference"] = reference(policy, model_dir)

    ids = policy.tokenizer(PROMPTS, add_special_tokens=False)["input_ids"]
    target = policy.tokenizer(" banana banana banana banana", add_special_tokens=False)["input_ids"]
    for _ in range(3):  # a few large steps, so that the greedy output moves
        policy.update([TrainSequence(i, target, "deduction_solve", 1.0) for i in ids])
    result["sync_s"] = policy.sync_rollout_weights()
    result["after"] = greedy(policy, PROMPTS)
    result["after_reference"] = reference(policy, model_dir)
    result["syncs"] = policy.backend.syncs

    # A stalled server: the next sync must end with a clear error, in time, on rank 0.
    server = policy.backend.server
    result["server_pid"] = server.process.pid if server is not None else None
    if server is not None:
        os.killpg(server.process.pid, signal.SIGSTOP)
    policy.update([TrainSequence(i, target, "deduction_solve", 1.0) for i in ids])
    started = time.monotonic()
    try:
        policy.sync_rollout_weights()
        result["stalled_error"] = None
    except Exception as exc:  # noqa: BLE001 - the error is the result
        result["stalled_error"] = f"{type(exc).__name__}: {exc}"
    result["stalled_s"] = time.monotonic() - started
    result["sync_timeout_s"] = SYNC_TIMEOUT_S
    policy.close()
    if policy.rank == 0:
        (out / "result.json").write_text(json.dumps(result))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
