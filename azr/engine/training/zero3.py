"""DeepSpeed ZeRO-3 through Accelerate's DeepSpeed plugin (`trainer.strategy: zero3`).

DeepSpeed partitions parameters, gradients and AdamW state over the ranks and gathers each
module's parameters in its forward hooks. Three things differ from DDP/FSDP2, and the engine
handles them: DeepSpeed takes the optimizer step inside the backward of the micro-batch that
ends the accumulation (`sync_gradients`), clips by its own `gradient_clipping` (set from
`trainer.max_grad_norm`) and reports the norm afterwards; generation runs with transformers'
`synced_gpus` so the per-module gathers stay collective. Checkpoints are DeepSpeed's own
(Accelerate's save_state) and resume on the same rank count only; the consolidated export is
gathered from the partitions.

DeepSpeed is an optional extra (`pip install 'azr[zero3]'`): it builds its kernels with a
CUDA toolchain, and Accelerate enables it only on accelerators (never with `cpu=True`).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from azr.config.schema import AZRConfig


def zero3_unavailable_reason(*, cpu: bool) -> str | None:
    """Why ZeRO-3 cannot run here, or None when it can."""
    if importlib.util.find_spec("deepspeed") is None:
        return "trainer.strategy zero3 needs DeepSpeed: pip install 'azr[zero3]' (deepspeed==0.19.8) on the GPU machine"
    if cpu:
        return (
            "trainer.strategy zero3 runs on GPUs only: Accelerate enables DeepSpeed only on accelerators "
            "(use trainer.strategy fsdp on CPU; it shards the same state)"
        )
    return None


def zero3_accelerator(config: AZRConfig, mixed_precision: str, *, cpu: bool) -> Any:
    """An Accelerator whose `prepare` hands the model and AdamW to a ZeRO-3 DeepSpeed engine."""
    reason = zero3_unavailable_reason(cpu=cpu)
    if reason is not None:
        raise RuntimeError(reason)
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin

    plugin = DeepSpeedPlugin(
        zero_stage=3,
        gradient_accumulation_steps=1,  # the engine marks the accumulation boundary itself
        gradient_clipping=config.trainer.max_grad_norm,
        zero3_init_flag=False,
        zero3_save_16bit_model=True,
    )
    return Accelerator(mixed_precision=mixed_precision, deepspeed_plugin=plugin)


def is_deepspeed(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED
