"""The engine: one SPMD program, started once per run by `accelerate launch`, resident until
the run ends (docs/architecture.md, process model).

Every rank builds the same `Policy` and executes every command collectively. Rank 0 alone
talks to the controller (JSON over TCP, `azr.engine.protocol`); `broadcast_object_list`
carries each command, a small dict, to the other ranks. Bulk data is files in the run
directory, read by every rank, written by rank 0. Nothing here imports Prefect.

A rank never outlives its run: it asks the kernel for SIGKILL when its parent (the launcher)
dies, rank 0 stops the group when the controller's connection closes, and while the
controller is busy elsewhere rank 0 broadcasts a keep-alive so that a vanished peer surfaces
within `engine.collective_timeout_s` instead of hanging a collective.

Run as `accelerate launch ... -m azr.engine.rank.service --run-dir RUN_DIR`.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import select
import shutil
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from azr.config.schema import AZRConfig
from azr.engine import interrupt, protocol
from azr.engine.controller.launch import engine_dir
from azr.ops.failure_advice import own_reason

if TYPE_CHECKING:
    from azr.engine.rank.policy import Policy

_T = TypeVar("_T")

logger = logging.getLogger("azr.engine")


def _failure_types() -> tuple[type[BaseException], ...]:
    """What a command may raise that is answered as its failure. torch's CheckpointException (a
    failed checkpoint load or save) derives from BaseException; it must not kill the rank."""
    from torch.distributed.checkpoint.api import CheckpointException

    return (Exception, CheckpointException)
CONFIG_FILE = "config.json"
KEEPALIVE_S = 30.0  # at most; a third of the collective timeout when that is shorter


def die_with_parent() -> None:
    """SIGKILL this rank when the launcher that started it dies, even by SIGKILL (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def init_distributed(timeout_s: float) -> None:
    """The process group with a bounded collective timeout (Accelerate then reuses it)."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))


class Ranks:
    """The collective side: who we are and how a small object reaches every rank."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.active = dist.is_initialized()
        self.rank = dist.get_rank() if self.active else 0
        self.size = dist.get_world_size() if self.active else 1

    def broadcast(self, obj: _T) -> _T:
        if not self.active:
            return obj
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: _T) -> list[_T]:
        if not self.active:
            return [obj]
        out: list[_T | None] = [None] * self.size
        self.dist.all_gather_object(out, obj)
        return out


class Engine:
    """Executes commands on the resident policy; every rank runs the same calls. `handlers`
    is the dispatch table: one method per `protocol.Command` the controller may send."""

    def __init__(self, policy: Policy, ranks: Ranks, run_root: Path) -> None:
        self.policy = policy
        self.ranks = ranks
        self.run_root = run_root
        self.handlers: dict[protocol.Command, Callable[[Any], protocol.Reply]] = {
            protocol.Command.PING: self.ping,
            protocol.Command.GENERATE: self.generate,
            protocol.Command.UPDATE: self.update,
            protocol.Command.SYNC_ROLLOUT_WEIGHTS: self.sync_rollout_weights,
            protocol.Command.SAVE_CHECKPOINT: self.save_checkpoint,
            protocol.Command.LOAD_CHECKPOINT: self.load_checkpoint,
            protocol.Command.RESUME: self.resume,
            protocol.Command.EXPORT_WEIGHTS: self.export_weights,
        }

    def execute(self, command: protocol.EngineCommand) -> protocol.Reply:
        handler = self.handlers.get(command.cmd)
        if handler is None:
            raise protocol.EngineError(f"the engine's ranks do not execute `{command.cmd}`")
        return handler(command)

    def ping(self, command: protocol.Ping) -> protocol.PingReply:
        return protocol.PingReply(id=_id(command), world_size=self.ranks.size, strategy=self.policy.strategy,
                                  weights_version=self.policy.weights_version)

    def generate(self, command: protocol.Generate) -> protocol.GenerateReply:
        """One merged call: `requests` split the prompts file into parts with their own
        settings; the completions file lists them all in prompt order."""
        prompts = protocol.read_prompts(command.prompts)
        results = self.policy.generate_many(protocol.split_requests(prompts, command.requests))
        completions = [samples for result in results for samples in result]
        if self.ranks.rank == 0:
            protocol.write_completions(command.completions, completions)
        return protocol.GenerateReply(id=_id(command), prompts=len(prompts))

    def update(self, command: protocol.Update) -> protocol.UpdateReply:
        reset_gpu_peak()
        metrics = self.policy.update_scored(command.scored)
        return protocol.UpdateReply(id=_id(command), metrics={**metrics, **gpu_memory(self.ranks)})

    def sync_rollout_weights(self, command: protocol.SyncRolloutWeights) -> protocol.SyncReply:
        return protocol.SyncReply(id=_id(command), seconds=self.policy.sync_rollout_weights())

    def save_checkpoint(self, command: protocol.SaveCheckpoint) -> protocol.PathReply:
        path = self.policy.save_checkpoint(command.root, command.step, command.metadata)
        return protocol.PathReply(id=_id(command), path=path)

    def load_checkpoint(self, command: protocol.LoadCheckpoint) -> protocol.CheckpointReply:
        info = self.policy.load_checkpoint(command.path)
        return protocol.CheckpointReply(id=_id(command), info=protocol.CheckpointRecord.of(info))

    def resume(self, command: protocol.Resume) -> protocol.CheckpointReply:
        info = self.policy.resume(command.root)
        return protocol.CheckpointReply(id=_id(command), info=protocol.CheckpointRecord.of(info))

    def export_weights(self, command: protocol.ExportWeights) -> protocol.PathReply:
        """The current weights as a Hugging Face directory (compute dtype), published atomically."""
        from azr.engine.training.checkpoints import export_pretrained, export_state_dict
        from azr.pipeline.atomic_io import publish_directory

        out = command.out_dir
        accelerator = self.policy.accelerator
        state_dict = export_state_dict(accelerator, self.policy.model)  # collective under sharding
        if accelerator.is_main_process:
            out.parent.mkdir(parents=True, exist_ok=True)
            temp = out.parent / f".tmp-{out.name}"
            shutil.rmtree(temp, ignore_errors=True)
            export_pretrained(self.policy.unwrapped_model, self.policy.tokenizer, state_dict, temp,
                              self.policy.compute_dtype)
            publish_directory(temp, out)
        accelerator.wait_for_everyone()
        return protocol.PathReply(id=_id(command), path=out)


def reset_gpu_peak() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def gpu_memory(ranks: Ranks) -> dict[str, Any]:
    """GPU memory of the command just run, read here where CUDA is (the controller has none):
    the largest peak any rank allocated and the least memory left free on any rank's GPU, with
    each rank's figures (MiB). Collective on GPUs (every rank has CUDA or none has); {} on CPU."""
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return {}
    free, _ = torch.cuda.mem_get_info()
    every = ranks.gather({"peak": torch.cuda.max_memory_allocated() / 2**20, "free": free / 2**20})
    return {"gpu_peak_mb": max(r["peak"] for r in every), "gpu_free_mb": min(r["free"] for r in every),
            "gpu_peak_mb_per_rank": [round(r["peak"], 1) for r in every],
            "gpu_free_mb_per_rank": [round(r["free"], 1) for r in every]}


def _id(command: protocol.EngineCommand) -> int:
    """The number the reply carries back (0 on the ranks that do not reply)."""
    return command.id if command.id is not None else 0


def _connect(ranks: Ranks) -> socket.socket | None:
    """Rank 0 connects to the controller and proves it belongs to this run."""
    if ranks.rank != 0:
        return None
    host, port = os.environ[protocol.CONTROLLER_ENV].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    protocol.send_message(sock, {"event": "hello", "token": os.environ.get(protocol.TOKEN_ENV, "")})
    return sock


def _next_command(sock: socket.socket, keepalive_s: float) -> protocol.EngineCommand | protocol.Failure:
    """Rank 0: the controller's next command, or the failure to answer when it is not one; a
    keep-alive after a quiet spell; shutdown when the controller has gone."""
    ready, _, _ = select.select([sock], [], [], keepalive_s)
    if not ready:
        return protocol.Keepalive()
    try:
        message = protocol.recv_message(sock)
    except (OSError, protocol.EngineError):
        return protocol.Shutdown(reason="the controller closed the connection")
    try:
        return protocol.parse_command(message)
    except protocol.EngineError as exc:
        number = message.get("id")
        return protocol.Failure(id=number if isinstance(number, int) else 0, error=str(exc))


def serve(run_root: Path) -> int:
    config = AZRConfig.model_validate_json((engine_dir(run_root) / CONFIG_FILE).read_text(encoding="utf-8"))
    init_distributed(config.engine.collective_timeout_s)
    ranks = Ranks()
    pids = ranks.gather({"rank": ranks.rank, "pid": os.getpid(), "host": socket.gethostname(),
                         "machine": int(os.environ.get("GROUP_RANK", "0"))})
    sock = _connect(ranks)
    if sock is not None:
        protocol.send_message(sock, {"event": "ranks", "ranks": pids})
    try:
        from azr.engine.rank.policy import Policy

        policy = Policy.create(config, rollout_dir=run_root / "rollout")
        failure = None
    except _failure_types() as exc:  # reported to the controller, then this rank exits
        policy, failure = None, own_reason(exc)
        logger.error("rank %d could not build the policy:\n%s", ranks.rank, traceback.format_exc())
    failures = ranks.gather(failure)
    if any(failures):
        if sock is not None:
            rank, message = next((r, f) for r, f in enumerate(failures) if f)
            where = "" if all(f == message for f in failures) else f"rank {rank} could not start: "
            protocol.send_message(sock, {"event": "failed", "error": where + message})
        return 1
    if sock is not None:
        endpoint = policy.backend.endpoint() if hasattr(policy.backend, "endpoint") else None  # dedicated vLLM servers
        protocol.send_message(sock, {"event": "ready", "world_size": ranks.size, "strategy": policy.strategy,
                                     "device": str(policy.accelerator.device), "rollout_servers": endpoint})
    engine = Engine(policy, ranks, run_root)
    try:
        return _loop(engine, ranks, sock, min(KEEPALIVE_S, config.engine.collective_timeout_s / 3))
    finally:
        policy.close()


def _loop(engine: Engine, ranks: Ranks, sock: socket.socket | None, keepalive_s: float) -> int:
    while True:
        received = _next_command(sock, keepalive_s) if sock is not None else None
        if isinstance(received, protocol.Failure):  # nothing to broadcast: the other ranks wait on
            logger.error("refused a command: %s", received.error)
            protocol.send_message(sock, received.model_dump(mode="json"))
            continue
        if received is not None and received.cmd != protocol.Command.KEEPALIVE:
            logger.info("command %s started", received.cmd)  # before the broadcast: a stuck peer shows here
        command: protocol.EngineCommand = ranks.broadcast(received)
        if isinstance(command, (protocol.Keepalive, protocol.Stop)):  # a stop that came after its command ended
            continue
        if isinstance(command, protocol.Shutdown):
            if sock is not None and command.id is not None:
                protocol.send_message(sock, protocol.Reply(id=command.id).model_dump(mode="json"))
            logger.info("shutting down (%s)", command.reason)
            return 0
        start = time.perf_counter()
        reply: protocol.Reply | None = None
        error: str | None = None
        try:
            with interrupt.watch(sock):  # rank 0 reads a `stop` while the command runs
                reply = engine.execute(command)
        except interrupt.CommandStopped as exc:
            error = str(exc)
            logger.warning("rank %d stopped %s: %s", ranks.rank, command.cmd, exc)
        except _failure_types() as exc:  # reported, then (several ranks) this rank exits
            error = own_reason(exc)
            logger.error("rank %d failed in %s:\n%s", ranks.rank, command.cmd, traceback.format_exc())
            if ranks.size > 1:
                _exit_group(ranks, sock, command, error)
        errors = ranks.gather(error) if ranks.size > 1 else [error]
        if sock is None:
            continue
        failed = [(r, e) for r, e in enumerate(errors) if e]
        if failed or reply is None:
            answer: protocol.Reply | protocol.Failure = protocol.Failure(
                id=_id(command), error="; ".join(f"rank {r}: {e}" for r, e in failed))
        else:
            answer = reply.model_copy(update={"elapsed_s": time.perf_counter() - start})
        logger.info("command %s finished in %.3f s", command.cmd, time.perf_counter() - start)
        protocol.send_message(sock, answer.model_dump(mode="json"))


def _exit_group(ranks: Ranks, sock: socket.socket | None, command: protocol.EngineCommand, error: str) -> None:
    """A rank that failed inside a command leaves at once (issue 22, item 19): its peers may be
    inside a collective of the same command that this rank will never join, so a gather of the
    errors would hang until the collective timeout. The launcher sees the exit and stops the
    other ranks; rank 0 first tells the controller why."""
    if sock is not None and command.id is not None:
        failure = protocol.Failure(id=command.id, error=f"rank {ranks.rank}: {error} {protocol.RANK_LEAVES}")
        try:
            protocol.send_message(sock, failure.model_dump(mode="json"))
        except OSError:
            pass
    logger.error("rank %d leaves the engine after the failure of %s", ranks.rank, command.cmd)
    logging.shutdown()
    os._exit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="azr.engine.rank.service", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="The run directory (engine/config.json in it).")
    args = parser.parse_args(argv)
    die_with_parent()
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank {rank} %(levelname)s %(message)s", stream=sys.stderr)
    try:
        code = serve(args.run_dir)
    except BaseException:
        _leave_group(together=False)  # the other ranks may be inside a collective: no barrier
        raise
    _leave_group(together=code == 0)
    return code


def _leave_group(*, together: bool) -> None:
    """Tear the process group down with every rank present, then skip the C++ static teardown.

    A rank whose peer (the one hosting the rendezvous store) has already exited can abort in the
    destructors of gloo's and the store's threads ("terminate called without an active
    exception", SIGABRT): a clean shutdown would then end with exit code -6. So the ranks meet
    at a barrier, destroy the group together, and leave with os._exit once the logs are out."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    try:
        if together and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()
    except Exception as exc:  # noqa: BLE001 - a peer already gone: nothing left to tear down together
        logger.warning("leaving the process group: %s", exc)


def _exit_now(code: int) -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit_now(main())
