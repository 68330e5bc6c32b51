"""DeepSpeed ZeRO-3 through Accelerate's DeepSpeed plugin (`trainer.strategy: zero3`).

DeepSpeed partitions parameters, gradients and AdamW state over the ranks and gathers each
module's parameters in its forward hooks. Three things differ from DDP/FSDP2, and the engine
handles them: DeepSpeed takes the optimizer step inside the backward of the micro-batch that
ends the accumulation (`sync_gradients`), clips by its own `gradient_clipping` (set from
`trainer.max_grad_norm`) and reports the norm afterwards; generation runs with transformers'
`synced_gpus` so the per-module gathers stay collective. Checkpoints are DeepSpeed's own
(Accelerate's save_state) and resume on the same rank count only; the consolidated export is
gathered from the partitions. The DeepSpeed config is written out in full (`zero3_config`):
Accelerate can fill its `auto` values only from a DataLoader, which the engine does not use.

DeepSpeed is an optional extra (`pip install 'azr[zero3]'`): it builds its kernels with a
CUDA toolchain, and Accelerate enables it only on accelerators (never with `cpu=True`).
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from pydantic import JsonValue

from azr.config.schema import AZRConfig

if TYPE_CHECKING:
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin


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


def zero3_config(config: AZRConfig, ranks: int) -> dict[str, JsonValue]:
    """The DeepSpeed config the engine hands to Accelerate, with no `auto` left in it.

    Accelerate fills `auto` batch sizes only from a DataLoader passed to `prepare`
    (accelerate 1.15 `accelerator.py` ~2179-2203); the engine prepares a model and an optimizer
    only, so an `auto` micro-batch makes `prepare` raise on every rank. The engine marks the
    accumulation boundary itself, so DeepSpeed sees one micro-batch of
    `trainer.micro_batch_size` sequences per step on each rank.
    """
    micro = config.trainer.micro_batch_size
    return {
        "train_micro_batch_size_per_gpu": micro,
        "train_batch_size": micro * ranks,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": config.trainer.max_grad_norm,
        "zero_optimization": {
            "stage": 3,
            "stage3_gather_16bit_weights_on_model_save": True,
        },
        "zero_allow_untested_optimizer": True,  # torch AdamW, built by the engine
    }


def zero3_plugin(config: AZRConfig, ranks: int) -> DeepSpeedPlugin:
    """Accelerate's DeepSpeed plugin for `config` on `ranks` ranks.

    `zero3_init_flag` makes transformers build the model under `deepspeed.zero.Init`, so each
    rank holds its partition from the start instead of a whole fp32 copy in host RAM (item 16
    of issue 22). With `trainer.kl_coef > 0` the engine deep-copies the loaded model as the
    frozen reference, which needs whole tensors: the flag stays off then.
    """
    from accelerate.utils import DeepSpeedPlugin

    partitioned = config.trainer.kl_coef == 0
    return DeepSpeedPlugin(hf_ds_config=zero3_config(config, ranks), zero3_init_flag=partitioned)


def zero3_accelerator(config: AZRConfig, mixed_precision: str, *, cpu: bool) -> Accelerator:
    """An Accelerator whose `prepare` hands the model and AdamW to a ZeRO-3 DeepSpeed engine."""
    reason = zero3_unavailable_reason(cpu=cpu)
    if reason is not None:
        raise RuntimeError(reason)
    import os

    from accelerate import Accelerator

    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    return Accelerator(mixed_precision=mixed_precision, deepspeed_plugin=zero3_plugin(config, ranks))


def is_deepspeed(accelerator: Accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED
