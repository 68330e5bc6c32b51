"""Step boundaries inside one forward and backward pass, for an interrupted run.

A stop (azr.engine.interrupt) is seen between tokens in generation and between micro-batches in
the update. On a CPU one such step can last many seconds: the prefill of a batch of long
prompts, or the forward and backward of a micro-batch. These hooks make every repeated block of
the model (each element of an `nn.ModuleList`: the decoder layers) a step boundary as well, in
the forward (a pre-hook) and in the backward (a hook on the block's output gradient), so a stop
is answered within one layer's work. Raising there is safe: generation discards the call, and
a stopped update drops its gradients before any optimizer step (TRRPPUpdate.accumulate).

The cost is one flag check per block call.
"""

from __future__ import annotations

from typing import Any

import torch

from azr.engine import interrupt

_INSTALLED = "_azr_stop_hooks"


def install_stop_hooks(model: torch.nn.Module) -> int:
    """Hook every block of every `nn.ModuleList` in `model` (once); the number of blocks hooked."""
    if getattr(model, _INSTALLED, False):
        return 0
    blocks = [block for module in model.modules() if isinstance(module, torch.nn.ModuleList) for block in module]
    for block in blocks:
        block.register_forward_pre_hook(_before_forward)
        block.register_forward_hook(_after_forward)
    setattr(model, _INSTALLED, True)
    return len(blocks)


def _before_forward(module: torch.nn.Module, args: Any) -> None:
    interrupt.stop_point("inside a forward pass")


def _after_forward(module: torch.nn.Module, args: Any, output: Any) -> None:
    tensor = output[0] if isinstance(output, (tuple, list)) and output else output
    if isinstance(tensor, torch.Tensor) and tensor.requires_grad and torch.is_grad_enabled():
        tensor.register_hook(_in_backward)


def _in_backward(grad: torch.Tensor) -> None:
    interrupt.stop_point("inside a backward pass")
