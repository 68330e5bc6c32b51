"""The engine's ranks: who holds which part of a batch, FSDP2 sharding, small collectives.

The engine is one SPMD program over N torch.distributed ranks (N = `trainer.world_size()`),
started by `accelerate launch` or `torchrun`; with one rank nothing here communicates. The
strategy (`trainer.strategy`) decides how the model is held:

- `ddp`: every rank holds the whole model and AdamW state; Accelerate wraps the model in DDP,
  which all-reduces (averages) the gradients in the last micro-batch's backward.
- `fsdp`: FSDP2. The engine applies torch's `fully_shard` itself, once per decoder layer and
  once on the model, over a 1-D device mesh of the run's device type (CPU/gloo or CUDA/NCCL),
  so the code that runs on a laptop's CPU ranks is the code that runs on GPUs (Accelerate
  assigns FSDP only on accelerators, so it cannot drive CPU ranks). Parameters, gradients and
  AdamW state are sharded (1/N per rank); the fp32 master shards are all-gathered to the
  compute dtype per layer for each forward (MixedPrecisionPolicy(param_dtype=compute,
  reduce_dtype=fp32)) and gradients are reduce-scattered in fp32 after every micro-batch, so
  only the 1/N gradient shard accumulates (never the whole fp32 gradient).
- `zero3`: DeepSpeed ZeRO-3 through Accelerate's DeepSpeed plugin (see `azr.engine.training.zero3`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without a process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def balanced_shares(sizes: Sequence[int], ranks: int) -> list[list[int]]:
    """Indices of `sizes` dealt to `ranks` ranks, largest first to the least loaded rank (ties:
    lowest rank), each share in ascending index order. Deterministic, so every rank computes
    every rank's share from the same list without communicating."""
    if ranks < 1:
        raise ValueError(f"ranks must be >= 1, got {ranks}")
    loads = [0] * ranks
    shares: list[list[int]] = [[] for _ in range(ranks)]
    for index in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        target = min(range(ranks), key=lambda r: (loads[r], len(shares[r]), r))
        shares[target].append(index)
        loads[target] += sizes[index]
    return [sorted(share) for share in shares]


def all_gather_objects(value: T) -> list[T]:
    """Every rank's `value`, in rank order (pickled over the process group; only engine-made
    values travel here, never model-generated code)."""
    import torch.distributed as dist

    rank, size = world()
    if size == 1:
        return [value]
    gathered: list[T | None] = [None] * size
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value: T) -> T:
    """Rank 0's `value` on every rank (pickled over the process group; engine-made values only)."""
    import torch.distributed as dist

    if world()[1] == 1:
        return value
    box: list[T] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def max_over_ranks(value: int) -> int:
    import torch.distributed as dist

    _, size = world()
    if size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.long, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def barrier() -> None:
    import torch.distributed as dist

    if world()[1] > 1:
        dist.barrier()


def _collective_device() -> torch.device:
    import torch.distributed as dist

    backend = dist.get_backend()
    if "nccl" in str(backend) and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ----------------------------------------------------------------------------- FSDP2


def is_fsdp2(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules FSDP2 shards one by one: the classes transformers names in
    `_no_split_modules` (LlamaDecoderLayer, Qwen2DecoderLayer, ...)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(
            f"{type(model).__name__} names no decoder layer class in _no_split_modules; FSDP2 needs "
            "one to shard per layer (use trainer.strategy ddp for this model)"
        )
    return layers


def apply_fsdp2(model: torch.nn.Module, device: torch.device, compute: torch.dtype, world_size: int) -> torch.nn.Module:
    """Shard `model` (already on `device`) in place over all ranks; returns it.

    Layers reshard after their forward (the memory saving); the root keeps its parameters
    (embeddings, final norm, the tied head) gathered until backward, as FSDP2 does for roots.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    stored = next(model.parameters()).dtype
    policy = MixedPrecisionPolicy(
        param_dtype=compute if compute != stored else None,
        reduce_dtype=torch.float32,
    )
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=policy, reshard_after_forward=True)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def fsdp2_clip_grad_norm(model: torch.nn.Module, max_norm: float) -> float:
    """Global gradient norm over the sharded gradients (DTensor partial norms reduced across
    ranks), then clipping; the norm before clipping."""
    from torch.distributed.tensor import DTensor

    norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], max_norm)
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    return float(norm)


@contextlib.contextmanager
def gathered_parameters(model: torch.nn.Module) -> Iterator[None]:
    """Hold FSDP2's full (compute-dtype) parameters for the duration, on every rank.

    All ranks all-gather every sharded module once, together, here; then forwards run without
    collectives, so each rank may generate a different number of tokens and batches. Layers
    reshard afterwards. A no-op for an unsharded model.
    """
    if not is_fsdp2(model):
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    modules = [m for m in model.modules() if isinstance(m, FSDPModule)]
    layers = [m for m in modules if m is not model]
    for layer in layers:
        layer.set_reshard_after_forward(False, recurse=False)
    try:
        for module in modules:
            module.unshard()
        yield
    finally:
        for layer in layers:
            layer.set_reshard_after_forward(True, recurse=False)
        for module in modules:
            module.reshard()


def full_parameters(model: torch.nn.Module, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, whole tensor) of every parameter and persistent buffer, one at a time, in
    checkpoint names and the same order on every rank; each tied tensor once.

    Collective when the model is sharded: an FSDP2 parameter (a DTensor shard) is cast to
    `dtype` and all-gathered on its own (`DTensor.full_tensor()`), a ZeRO-3 one is gathered
    alone under `deepspeed.zero.GatheredParameters`; so at most one whole parameter exists
    beside the shards, never the whole model. Every rank must consume the iterator fully.
    """
    from torch.distributed.tensor import DTensor

    def cast(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor

    for name, parameter in model.named_parameters():  # shared (tied) parameters come once
        tensor = parameter.detach()
        if isinstance(tensor, DTensor):
            yield name, cast(tensor).full_tensor()
        elif hasattr(parameter, "ds_id"):  # DeepSpeed ZeRO-3 partition
            import deepspeed

            with deepspeed.zero.GatheredParameters([parameter], modifier_rank=None):
                whole = parameter.data.to(dtype or parameter.dtype, copy=True)  # outlives the gather
            yield name, whole
        else:
            yield name, cast(tensor)
    for module_name, module in model.named_modules():
        for buffer_name, buffer in module.named_buffers(recurse=False):
            if buffer_name not in module._non_persistent_buffers_set:
                name = f"{module_name}.{buffer_name}" if module_name else buffer_name
                tensor = buffer.detach()
                yield name, cast(tensor.full_tensor() if isinstance(tensor, DTensor) else tensor)


# ----------------------------------------------------------------------------- loading once


def materialize_from_rank0(model: torch.nn.Module, device: torch.device,
                           source: torch.nn.Module | None) -> torch.nn.Module:
    """Give `model` (built on the meta device on every rank, FSDP2-sharded or not) real memory
    on `device` and rank 0's weights; `source` is rank 0's loaded model (None elsewhere).

    Parameters and persistent buffers: torch's `set_model_state_dict` with
    `broadcast_from_rank0`, which sends one whole tensor at a time and keeps this rank's shard
    of it. Non-persistent buffers (RoPE's inv_freq), which no state dict holds: broadcast one by
    one. Collective: every rank calls it. Ties (a tied LM head) are restored after `to_empty`.
    """
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    rank = world()[0]
    if (source is None) != (rank != 0):
        raise ValueError("materialize_from_rank0: rank 0 passes the loaded model, the other ranks None")
    model.to_empty(device=device)
    if not is_fsdp2(model) and hasattr(model, "tie_weights"):
        model.tie_weights()  # to_empty gives each module its own copy of a shared parameter
    full = source.state_dict() if source is not None else {}
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    sources = dict(source.named_buffers()) if source is not None else {}
    for name, buffer in model.named_buffers():
        if rank == 0:
            buffer.copy_(sources[name].to(buffer.device))
        dist.broadcast(buffer, src=0)
    return model
