"""One engine rank of the distributed tests: `torchrun --nproc-per-node N distributed_worker.py
OUT STRATEGY ACTION...` builds `Policy.create` on the tiny model (fp32, CPU, gloo) and runs the
actions collectively, in order; rank 0 writes what each action returned to OUT/result.json and
the full weights after each update or load to OUT/weights-K.pt.

Actions: `update:1`, `update:2`, `update:3` (the fixed batches below), `generate`, `save:DIR`,
`load:DIR` (the latest checkpoint under DIR), `export` (the engine's export_weights into OUT/export).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from azr.config.loading import build_config
from azr.engine.training.checkpoints import full_model_state_dict, latest_checkpoint
from azr.engine.api import SamplingSettings
from azr.engine.rank.policy import Policy
from azr.engine.api import TrainSequence

BATCHES = {
    "1": [
        TrainSequence([5, 6, 7], [100, 200, 300], "deduction_solve", 1.2),
        TrainSequence([8, 9], [11, 12, 13, 14, 15], "deduction_solve", -0.7),
        TrainSequence([40, 41, 42, 43], [50, 51, 52, 53], "abduction_propose", 0.5),
        TrainSequence([70], [71, 72], "induction_solve", -1.5),
        TrainSequence([3, 4], [9, 10, 11, 12, 13, 14, 15, 16], "induction_solve", 0.8),
    ],
    "2": [
        TrainSequence([1, 2, 3], [400, 401], "abduction_solve", -0.3),
        TrainSequence([9, 9], [7, 7, 7], "abduction_solve", 0.9),
        TrainSequence([60, 61, 62], [63, 64, 65, 66], "deduction_propose", 1.1),
    ],
    "3": [TrainSequence([20, 21], [22, 23, 24], "induction_propose", -0.4)],  # one rank gets nothing
}
PROMPTS = ["def f(a):", "x = 1\nprint(", "# add two numbers\n", "import", "class A:", "for i in range("]


def config(strategy: str, processes: int):
    return build_config(
        "tiny",
        overrides=[
            "model.dtype=float32",
            f"trainer.strategy={strategy}",
            f"trainer.processes={processes}",
            "trainer.micro_batch_size=2",
            "trainer.learning_rate=0.001",
            "trainer.keep_checkpoints=2",
            "rollout.generation_batch_size=2",
        ],
    )


def main(out: Path, strategy: str, actions: list[str]) -> None:
    import torch.distributed as dist

    world = int(__import__("os").environ.get("WORLD_SIZE", "1"))
    reads = _count_weight_reads()
    policy = Policy.create(config(strategy, world), cpu=True)
    from azr.engine.training.distributed import all_gather_objects

    results: list[dict] = [{"action": "create", "weight_reads": all_gather_objects(reads["count"]),
                            "rank_results_equal": True}]
    weights = 0
    for action in actions:
        kind, _, arg = action.partition(":")
        record: dict = {"action": action}
        if kind == "update":
            record["metrics"] = policy.update(BATCHES[arg]).as_dict()
        elif kind == "generate":
            greedy = policy.generate(PROMPTS, SamplingSettings(max_new_tokens=6, temperature=0.0))
            sampled = policy.generate(PROMPTS, SamplingSettings(max_new_tokens=6, n=2, seed=7))
            record["greedy"] = [[list(c.token_ids) for c in group] for group in greedy]
            record["sampled"] = [[list(c.token_ids) for c in group] for group in sampled]
        elif kind == "export":  # the engine's export_weights command
            from azr.engine import protocol
            from azr.engine.rank.service import Engine, Ranks

            Engine(policy, Ranks(), out).export_weights(protocol.ExportWeights(out_dir=out / "export"))
        elif kind == "save":
            record["path"] = str(policy.save_checkpoint(Path(arg), step=len(results) + 1))
        elif kind == "load":
            record["step"] = policy.load_checkpoint(latest_checkpoint(Path(arg))).step
        else:
            raise SystemExit(f"unknown action {action!r}")
        if kind in ("update", "load"):
            state = full_model_state_dict(policy.model)
            if policy.rank == 0:
                torch.save(state, out / f"weights-{weights}.pt")
            record["weights"] = f"weights-{weights}.pt"
            weights += 1
        record["rank_results_equal"] = _same_on_every_rank({k: v for k, v in record.items() if k != "metrics"})
        results.append(record)
    if policy.rank == 0:
        (out / "result.json").write_text(json.dumps({"world_size": world, "results": results}))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _count_weight_reads() -> dict:
    """Count the model loads of this rank that read real weights (not a meta-device build)."""
    import azr.engine.rank.policy as policy_module

    reads = {"count": 0}
    real_load = policy_module.load_model

    def counting(*args, **kwargs):
        if not kwargs.get("empty", False):
            reads["count"] += 1
        return real_load(*args, **kwargs)

    policy_module.load_model = counting
    return reads


def _same_on_every_rank(value: dict) -> bool:
    from azr.engine.training.distributed import all_gather_objects

    gathered = all_gather_objects(json.dumps(value, sort_keys=True))
    return all(g == gathered[0] for g in gathered)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])
