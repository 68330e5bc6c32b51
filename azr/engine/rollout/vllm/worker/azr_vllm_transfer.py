"""Inside a dedicated vLLM server: the `azr_gloo` weight-transfer engine and the worker extension.

The server mode copies this file onto the server's PYTHONPATH, next to `azr_vllm_extension.py`
(a copy of azr/engine/rollout/vllm/extension.py), and starts vLLM with `--worker-extension-cls
azr_vllm_transfer.AZRTransferWorkerExtension`. vLLM imports the class when it builds each
worker, before the model loads, so the import registers `azr_gloo` in vLLM's weight-transfer
engine factory in time for `--weight-transfer-config '{"backend": "azr_gloo"}'`.

`azr_gloo` speaks vLLM's own protocol (init, start, update, finish over the server's HTTP
routes); only the channel differs from vLLM's `nccl` engine: a torch gloo group, which exists
on CPU builds of vLLM where NCCL does not. The received tensors are loaded with the same
in-place reload as the file path (`reload_in_place`, which also refreshes a tied LM head).
This file runs in the vLLM process only (it is not a module of the `azr` package, which must
import without vLLM): standard library, torch and vLLM (0.32-0.33).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from azr_vllm_extension import AZRWorkerExtension, reload_in_place  # type: ignore[import-not-found]
from vllm.distributed.weight_transfer.base import (
    WeightTransferEngine,
    WeightTransferInitInfo,
    WeightTransferUpdateInfo,
)
from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

BACKEND = "azr_gloo"


@dataclass
class GlooInitInfo(WeightTransferInitInfo):
    master_address: str
    master_port: int
    rank_offset: int
    world_size: int
    timeout_s: float = 600.0


@dataclass
class GlooUpdateInfo(WeightTransferUpdateInfo):
    names: list[str]
    dtype_names: list[str]
    shapes: list[list[int]]

    def __post_init__(self) -> None:
        if not len(self.names) == len(self.dtype_names) == len(self.shapes):
            raise ValueError("names, dtype_names and shapes must have the same length")


class GlooWeightTransferEngine(WeightTransferEngine[GlooInitInfo, GlooUpdateInfo]):
    """Receives checkpoint-format tensors from trainer rank 0 over a gloo group."""

    init_info_cls = GlooInitInfo
    update_info_cls = GlooUpdateInfo
    supports_draft_weight_update = False

    def __init__(self, config: Any, vllm_config: Any, device: torch.device, model: torch.nn.Module) -> None:
        super().__init__(config, vllm_config, device, model)
        self.group: Any = None

    def init_transfer_engine(self, init_info: GlooInitInfo) -> None:
        parallel = self.parallel_config
        rank = init_info.rank_offset + parallel.data_parallel_index * parallel.world_size + parallel.rank
        timeout = datetime.timedelta(seconds=init_info.timeout_s)
        store = dist.TCPStore(init_info.master_address, init_info.master_port, init_info.world_size,
                              is_master=False, timeout=timeout)
        self.group = dist.ProcessGroupGloo(dist.PrefixStore("azr-weights", store), rank, init_info.world_size, timeout)

    def start_weight_update(self) -> None:
        """Nothing to prepare: `receive_weights` runs the whole layer-wise reload."""

    def finish_weight_update(self) -> None:
        """Nothing to finish: `receive_weights` has finalized the reload."""

    def update_weights(self, update_info: dict[str, Any]) -> None:
        # The base class synchronizes an accelerator afterwards; on CPU there is none.
        self.receive_weights(self.parse_update_info(update_info))

    def receive_weights(self, update_info: GlooUpdateInfo) -> None:
        if self.group is None:
            raise RuntimeError("azr_gloo weight transfer is not initialized: call init_weight_transfer_engine first")
        reload_in_place(self.model, self.vllm_config, self._received(update_info))

    def _received(self, info: GlooUpdateInfo) -> Iterator[tuple[str, torch.Tensor]]:
        options = dist.BroadcastOptions()
        options.rootRank = 0
        for name, dtype_name, shape in zip(info.names, info.dtype_names, info.shapes):
            tensor = torch.empty(shape, dtype=getattr(torch, dtype_name))
            self.group.broadcast([tensor], options).wait()
            yield name, tensor.to(self.device)

    def shutdown(self) -> None:
        self.group = None


if BACKEND not in WeightTransferEngineFactory._registry:  # each worker imports this module once
    WeightTransferEngineFactory.register_engine(BACKEND, GlooWeightTransferEngine)


class AZRTransferWorkerExtension(AZRWorkerExtension):
    """The file-path extension (`azr_load_weights`); importing it registers `azr_gloo`."""
