"""Generation on the engine's ranks: each rank decodes a share of the generate calls.

Every rank receives all prompts (the `Policy` calls are collective). The call plan is made
from all prompts, exactly as one process makes it; the calls are dealt to the ranks by their
size (rows x (longest prompt + max_new_tokens)); each rank decodes its calls with its full
model (DDP) or with the FSDP2 parameters gathered once for the whole request; the completions
are all-gathered, so every rank returns all of them in prompt order.

Each sampled row draws from a generator seeded by (seed, prompt index, sample number), so the
samples do not depend on the rank count: N ranks return what one process returns, up to the
numerics of the weights they decode with (FSDP2 decodes with the compute-dtype copy of the fp32 master weights
instead of fp32 weights under autocast; with `model.dtype: float32` the two are the same).
Under ZeRO-3 the parameters stay partitioned and every forward gathers them, so the ranks
decode in lockstep (transformers' `synced_gpus`) and run equally many generate calls.
"""

from __future__ import annotations

from azr.engine.training.distributed import all_gather_objects, balanced_shares, gathered_parameters, world
from azr.engine.rollout.transformers_backend import Decoded, GenerationPlan, TransformersBackend


class ShardedTransformersBackend(TransformersBackend):
    """`TransformersBackend` over all ranks of the process group (collective `generate`)."""

    def decode_plan(self, plan: GenerationPlan) -> dict[int, Decoded]:
        rank, size = world()
        shares = balanced_shares([plan.cost(b) for b in range(len(plan.batches))], size)
        mine = shares[rank]
        with gathered_parameters(self.model):
            local = self.decode(plan, mine)
            if self.synced_gpus:  # ZeRO-3: as many generate calls as the busiest rank, results unused
                self.decode(plan, [0] * (max(map(len, shares)) - len(mine)))
        outputs: dict[int, Decoded] = {}
        for part in all_gather_objects(local):
            outputs.update(part)
        return outputs
