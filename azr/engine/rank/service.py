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
from pathlib import Path
from typing import Any

from azr.config.schema import AZRConfig
from azr.engine import interrupt, protocol
from azr.engine.controller.launch import engine_dir
from azr.ops.failure_advice import own_reason

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

    def broadcast(self, obj: Any) -> Any:
        if not self.active:
            return obj
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.size
        self.dist.all_gather_object(out, obj)
        return out


class Engine:
    """Executes commands on the resident policy; every rank runs the same calls."""

    def __init__(self, policy: Any, ranks: Ranks, run_root: Path) -> None:
        self.policy = policy
        self.ranks = ranks
        self.run_root = run_root

    def execute(self, command: dict[str, Any]) -> dict[str, Any]:
        name = command["cmd"]
        handler = getattr(self, f"cmd_{name}", None)
        if handler is None:
            raise ValueError(f"unknown engine command {name!r}")
        return handler(command)

    def cmd_ping(self, command: dict[str, Any]) -> dict[str, Any]:
        return {"world_size": self.ranks.size, "strategy": self.policy.strategy,
                "weights_version": self.policy.weights_version}

    def cmd_generate(self, command: dict[str, Any]) -> dict[str, Any]:
        """One merged call: `requests` split the prompts file into parts with their own settings
        (a lone `settings` is one part); the completions file lists them all in prompt order."""
        from azr.engine.rollout.transformers_backend import generate_requests

        prompts = protocol.read_prompts(Path(command["prompts"]))
        parts = command.get("requests") or [{"prompts": len(prompts), "settings": command["settings"]}]
        results = generate_requests(self.policy, protocol.split_requests(prompts, parts))
        completions = [samples for result in results for samples in result]
        if self.ranks.rank == 0:
            protocol.write_completions(Path(command["completions"]), completions)
        return {"prompts": len(prompts)}

    def cmd_update(self, command: dict[str, Any]) -> dict[str, Any]:
        reset_gpu_peak()
        metrics = self.policy.update_scored(Path(command["scored"]))
        return {"metrics": {**metrics, **gpu_memory(self.ranks)}}

    def cmd_sync_rollout_weights(self, command: dict[str, Any]) -> dict[str, Any]:
        return {"seconds": self.policy.sync_rollout_weights()}

    def cmd_save_checkpoint(self, command: dict[str, Any]) -> dict[str, Any]:
        path = self.policy.save_checkpoint(command["root"], int(command["step"]), command.get("metadata"))
        return {"path": str(path)}

    def cmd_load_checkpoint(self, command: dict[str, Any]) -> dict[str, Any]:
        return {"info": _info(self.policy.load_checkpoint(command["path"]))}

    def cmd_resume(self, command: dict[str, Any]) -> dict[str, Any]:
        return {"info": _info(self.policy.resume(command["root"]))}

    def cmd_export_weights(self, command: dict[str, Any]) -> dict[str, Any]:
        """The current weights as a Hugging Face directory (compute dtype), published atomically."""
        from azr.pipeline.atomic_io import publish_directory
        from azr.engine.training.checkpoints import export_pretrained, export_state_dict

        out = Path(command["out_dir"])
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
        return {"path": str(out)}


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


def _info(info: Any) -> dict[str, Any] | None:
    if info is None:
        return None
    return {"path": str(info.path), "step": int(info.step), "metadata": dict(info.metadata)}


def _connect(ranks: Ranks) -> socket.socket | None:
    """Rank 0 connects to the controller and proves it belongs to this run."""
    if ranks.rank != 0:
        return None
    host, port = os.environ[protocol.CONTROLLER_ENV].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    protocol.send_message(sock, {"event": "hello", "token": os.environ.get(protocol.TOKEN_ENV, "")})
    return sock


def _next_command(sock: socket.socket, keepalive_s: float) -> dict[str, Any]:
    """Rank 0: the controller's next command; a keep-alive after a quiet spell; shutdown when
    the controller has gone."""
    ready, _, _ = select.select([sock], [], [], keepalive_s)
    if not ready:
        return {"cmd": "keepalive"}
    try:
        return protocol.recv_message(sock)
    except (OSError, protocol.EngineError):
        return {"cmd": "shutdown", "reason": "the controller closed the connection"}


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
        protocol.send_message(sock, {"event": "ready", "world_size": ranks.size, "strategy": policy.strategy,
                                     "device": str(policy.accelerator.device)})
    engine = Engine(policy, ranks, run_root)
    try:
        return _loop(engine, ranks, sock, min(KEEPALIVE_S, config.engine.collective_timeout_s / 3))
    finally:
        policy.close()


def _loop(engine: Engine, ranks: Ranks, sock: socket.socket | None, keepalive_s: float) -> int:
    while True:
        command = _next_command(sock, keepalive_s) if sock is not None else None
        if command is not None and command["cmd"] != "keepalive":
            logger.info("command %s started", command["cmd"])  # before the broadcast: a stuck peer shows here
        command = ranks.broadcast(command)
        name = command["cmd"]
        if name in ("keepalive", interrupt.STOP_COMMAND):  # a stop that came after its command ended
            continue
        if name == "shutdown":
            if sock is not None and "id" in command:
                protocol.send_message(sock, {"id": command["id"], "ok": True})
            logger.info("shutting down (%s)", command.get("reason", "asked by the controller"))
            return 0
        start = time.perf_counter()
        try:
            with interrupt.watch(sock):  # rank 0 reads a `stop` while the command runs
                reply, error = engine.execute(command), None
        except interrupt.CommandStopped as exc:
            reply, error = {}, str(exc)
            logger.warning("rank %d stopped %s: %s", ranks.rank, name, exc)
        except _failure_types() as exc:  # reported, then (several ranks) this rank exits
            reply, error = {}, own_reason(exc)
            logger.error("rank %d failed in %s:\n%s", ranks.rank, name, traceback.format_exc())
            if ranks.size > 1:
                _exit_group(ranks, sock, command, error)
        errors = ranks.gather(error) if ranks.size > 1 else [error]
        if sock is None:
            continue
        failed = [(r, e) for r, e in enumerate(errors) if e]
        if failed:
            reply = {"id": command["id"], "ok": False, "error": "; ".join(f"rank {r}: {e}" for r, e in failed)}
        else:
            reply = {"id": command["id"], "ok": True, "elapsed_s": time.perf_counter() - start, **reply}
        logger.info("command %s finished in %.3f s", name, time.perf_counter() - start)
        protocol.send_message(sock, reply)


def _exit_group(ranks: Ranks, sock: socket.socket | None, command: dict[str, Any], error: str) -> None:
    """A rank that failed inside a command leaves at once (issue 22, item 19): its peers may be
    inside a collective of the same command that this rank will never join, so a gather of the
    errors would hang until the collective timeout. The launcher sees the exit and stops the
    other ranks; rank 0 first tells the controller why."""
    if sock is not None and "id" in command:
        try:
            protocol.send_message(sock, {"id": command["id"], "ok": False,
                                         "error": f"rank {ranks.rank}: {error} (the engine stops: a rank failed)"})
        except OSError:
            pass
    logger.error("rank %d leaves the engine after the failure of %s", ranks.rank, command.get("cmd"))
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
        return serve(args.run_dir)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
