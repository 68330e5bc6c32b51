"""The controller's side of the engine: the `Policy` interface the pipeline calls, no model.

`EngineClient.start(config, run_root)` starts machine 0's `accelerate launch` of
`azr.engine.rank.service`, waits for its ranks to load the policy, and from then on turns each
call (generate, update, checkpoints, weight sync and export) into one command on the socket
rank 0 opened, with the bulk data as files under `RUN_DIR/engine/`. The tokenizer is loaded
here too, for prompt wrapping and token counting.

Every call has a deadline (`engine.*_timeout_s`). When the engine dies or misses one, the
client kills the launcher's process group and every rank it knows of on this machine, and
raises one `EngineError` that names the command, the setting and the end of the engine's
log (`RUN_DIR/engine/engine.log`); the run directory keeps what was done for `--resume`.
"""

from __future__ import annotations

import atexit
import hmac
import itertools
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import JsonValue, ValidationError

from azr.pipeline.atomic_io import PathLike, atomic_write_json, atomic_write_text
from azr.config.schema import AZRConfig
from azr.engine import interrupt, protocol
from azr.engine.controller.direct_rollout import DirectRollout, RolloutEndpoint
from azr.engine.controller.launch import (
    SERVICE_MODULE,
    engine_dir,
    gpu_environment,
    launch_command,
    launch_environment,
    on_cpu,
)
from azr.engine.api import (
    CheckpointInfo,
    GenerationRequest,
    PromptCompletions,
    RequestGenerator,
    TrainSequence,
    UpdateMetrics,
)
from azr.engine.protocol import EngineError
from azr.engine.rank.service import CONFIG_FILE
from azr.engine.rollout.vllm.server import free_port
from azr.ops.failure_advice import log_reason_or_tail

LOG_FILE = "engine.log"
RANKS_FILE = "ranks.json"
_POLL_S = 0.2


_R = TypeVar("_R", bound=protocol.Reply)
Tokenizer = Any  # a transformers PreTrainedTokenizerBase; the controller side imports no transformers


class EngineClient(RequestGenerator):
    """A running engine, driven from the controller (a `PolicyHandle`). Build it with
    `EngineClient.start`."""

    def __init__(self, config: AZRConfig, run_root: Path, process: subprocess.Popen, sock: socket.socket,
                 tokenizer: Tokenizer, ranks: list[dict[str, JsonValue]], ready: dict[str, JsonValue]) -> None:
        self.config = config
        self.run_root = run_root
        self.process = process
        self.tokenizer = tokenizer
        self.ranks = ranks
        self.world_size = int(ready["world_size"])
        self.strategy = str(ready["strategy"])
        self.device = str(ready.get("device", ""))
        self.rollout_endpoint = RolloutEndpoint.from_ready(ready)
        self._sock = sock
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._failed: str | None = None
        _live.add(self)

    # -------------------------------------------------------------------- start

    @classmethod
    def start(cls, config: AZRConfig, run_root: PathLike, *, tokenizer: Tokenizer | None = None) -> EngineClient:
        """Launch the engine for this run and wait until every rank holds the policy."""
        run_root = Path(run_root)
        directory = engine_dir(run_root)
        (directory / "io").mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / CONFIG_FILE, config.model_dump_json())
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        token = secrets.token_hex(32)
        cpu = on_cpu()
        argv = launch_command(config, run_root, port=free_port("127.0.0.1"), cpu=cpu)
        try:
            gpus = gpu_environment(config, cpu=cpu)  # rollout.gpus: the trainer's ranks never see them
        except ValueError as exc:
            listener.close()
            raise EngineError(str(exc)) from exc
        env = launch_environment(cpu=cpu, extra={
            protocol.TOKEN_ENV: token, protocol.CONTROLLER_ENV: f"127.0.0.1:{listener.getsockname()[1]}", **gpus,
        })
        log_path = directory / LOG_FILE
        with open(log_path, "ab") as log:
            log.write(f"\n$ {' '.join(argv)}\n".encode())
            log.flush()
            try:
                process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           env=env, start_new_session=True, preexec_fn=_die_with_parent)
            except OSError as exc:
                listener.close()
                raise EngineError(f"cannot start the engine with {argv[0]}: {exc} (engine.python)") from exc
        starting = _Starting(process, log_path, config.engine.start_timeout_s)
        try:
            sock = starting.accept(listener, token)
            ranks = starting.expect(sock, "ranks")["ranks"]
            atomic_write_json(directory / RANKS_FILE, {"launcher": process.pid, "ranks": ranks})
            starting.ranks = ranks
            ready = starting.expect(sock, "ready")
            if tokenizer is None:  # after the engine: its model-loading errors come first, and
                from azr.engine.models.tokenizer import load_tokenizer  # a GGUF source is converted by then

                tokenizer = load_tokenizer(config.model)
        except BaseException:
            starting.kill()
            raise
        finally:
            listener.close()
        return cls(config, run_root, process, sock, tokenizer, ranks, ready)

    # -------------------------------------------------------------------- the Policy interface

    def generate_many(self, requests: Sequence[GenerationRequest]) -> list[PromptCompletions]:
        """Several GenerationRequests in one round trip and one engine call (as
        Policy.generate_many): one prompts file, the requests' sizes and settings in the message."""
        prompts = [prompt for request in requests for prompt in request.prompts]
        if not prompts:
            return [[] for _ in requests]
        number = next(self._ids)
        io = engine_dir(self.run_root) / "io"
        prompts_path, out_path = io / f"{number:08d}-prompts.parquet", io / f"{number:08d}-completions.parquet"
        try:
            protocol.write_prompts(prompts_path, prompts)
            command = protocol.Generate(prompts=prompts_path, completions=out_path,
                                        requests=protocol.request_parts(requests))
            self._call(command, protocol.GenerateReply, "generate_timeout_s")
            completions = protocol.read_completions(out_path, len(prompts))
        finally:
            prompts_path.unlink(missing_ok=True)
            out_path.unlink(missing_ok=True)
        results, start = [], 0
        for request in requests:
            results.append(completions[start:start + len(request.prompts)])
            start += len(request.prompts)
        return results

    def direct_rollout(self) -> DirectRollout | None:
        """Generation on the engine's dedicated vLLM servers straight from here, concurrent with
        any engine command (one-step-off generation); None when the engine has no such servers."""
        if self.rollout_endpoint is None:
            return None
        settings = self.config.rollout.vllm
        return DirectRollout(self.rollout_endpoint, self.tokenizer, request_timeout_s=settings.request_timeout_s,
                             concurrency=settings.max_concurrent_requests)

    def update_scored(self, scored: PathLike) -> dict[str, JsonValue]:
        """One TRR++ step on the trained rows of a scored.parquet; update.json's metrics."""
        reply = self._call(protocol.Update(scored=Path(scored).resolve()), protocol.UpdateReply, "update_timeout_s")
        return dict(reply.metrics)

    def update(self, sequences: Sequence[TrainSequence]) -> UpdateMetrics:
        """One TRR++ step on these sequences (written to a file for the ranks to read)."""
        import pyarrow as pa

        from azr.pipeline.atomic_io import write_parquet_atomic

        if not sequences:
            raise ValueError("an update needs at least one sequence")
        path = engine_dir(self.run_root) / "io" / f"{next(self._ids):08d}-sequences.parquet"
        table = pa.table({
            "trained": [True] * len(sequences),
            "prompt_token_ids": [list(s.prompt_ids) for s in sequences],
            "response_token_ids": [list(s.response_ids) for s in sequences],
            "group": [s.group for s in sequences],
            "advantage": [float(s.advantage) for s in sequences],
        })
        try:
            write_parquet_atomic(table, path)
            return UpdateMetrics.from_dict(self.update_scored(path))
        finally:
            path.unlink(missing_ok=True)

    def sync_rollout_weights(self) -> float | None:
        return self._call(protocol.SyncRolloutWeights(), protocol.SyncReply, "checkpoint_timeout_s").seconds

    def save_checkpoint(self, root: PathLike, step: int, metadata: Mapping[str, JsonValue] | None = None) -> Path:
        command = protocol.SaveCheckpoint(root=Path(root).resolve(), step=step, metadata=dict(metadata or {}))
        return self._call(command, protocol.PathReply, "checkpoint_timeout_s").path

    def load_checkpoint(self, path: PathLike) -> CheckpointInfo:
        reply = self._call(protocol.LoadCheckpoint(path=Path(path).resolve()), protocol.CheckpointReply,
                           "checkpoint_timeout_s")
        if reply.info is None:
            raise EngineError(f"the engine loaded {path} but did not say which checkpoint it was")
        return reply.info.info()

    def resume(self, root: PathLike) -> CheckpointInfo | None:
        """Load the newest complete checkpoint under `root`, if any (None when there is none)."""
        reply = self._call(protocol.Resume(root=Path(root).resolve()), protocol.CheckpointReply, "checkpoint_timeout_s")
        return reply.info.info() if reply.info is not None else None

    def export_weights(self, out_dir: PathLike) -> Path:
        """The current weights as a Hugging Face model directory."""
        return self._call(protocol.ExportWeights(out_dir=Path(out_dir).resolve()), protocol.PathReply,
                          "checkpoint_timeout_s").path

    def ping(self) -> dict[str, JsonValue]:
        """The engine's rank count, strategy and weights version (and the reply's own fields)."""
        return self._call(protocol.Ping(), protocol.PingReply, "control_timeout_s").model_dump(mode="json")

    def close(self) -> None:
        """Shut the engine down (every rank exits); kills what is left after the timeout. Idempotent."""
        with self._lock:
            if self._failed is None and self.process.poll() is None:
                try:
                    self._request(protocol.Shutdown(id=next(self._ids)), "control_timeout_s")
                    self.process.wait(timeout=self.config.engine.control_timeout_s)
                except (EngineError, OSError, subprocess.TimeoutExpired):
                    pass
            self._failed = self._failed or "the engine was closed"
            _kill(self.process, self.ranks)
            self._sock.close()
            _live.discard(self)

    # -------------------------------------------------------------------- the wire

    def _call(self, command: protocol.EngineCommand, reply_type: type[_R], timeout_setting: str) -> _R:
        with self._lock:
            if self._failed is not None:
                raise EngineError(f"the engine cannot take `{command.cmd}`: {self._failed}")
            reply = self._request(command.model_copy(update={"id": next(self._ids)}), timeout_setting)
        try:
            return reply_type.model_validate(reply)
        except ValidationError as exc:
            raise EngineError(f"the engine's reply to `{command.cmd}` is malformed: {exc}") from None

    def _request(self, command: protocol.EngineCommand, timeout_setting: str) -> dict[str, JsonValue]:
        timeout = float(getattr(self.config.engine, timeout_setting))
        deadline = time.monotonic() + timeout
        name = command.cmd
        try:
            protocol.send_message(self._sock, protocol.command_message(command))
            while True:
                reply = _receive(self._sock, self.process, deadline)
                if reply.get("id") == command.id:
                    break
        except _Died:
            code = self.process.poll()
            how = f"its launcher exited with code {code}" if code is not None else "rank 0 closed the connection"
            self._fail(f"the engine stopped during `{name}` ({how}): a rank died or failed")
        except (socket.timeout, TimeoutError):
            self._fail(f"the engine did not finish `{name}` within {timeout:g} s (engine.{timeout_setting}); "
                       "it was stopped")
        except OSError as exc:
            self._fail(f"lost the connection to the engine during `{name}` ({exc})")
        except BaseException as exc:  # Ctrl-C, Prefect's TerminationSignal (SIGTERM, a cancellation)
            if isinstance(exc, Exception):
                raise
            self._stop_command(name, _number(command))
            raise
        if not reply.get("ok"):
            error = str(reply.get("error"))
            if error.endswith(protocol.RANK_LEAVES):  # the rank leaves, the launcher stops the rest
                self._fail(f"the engine stopped during `{name}`: {error.removesuffix(protocol.RANK_LEAVES).strip()}")
            raise EngineError(f"the engine failed in `{name}`: {error} (tracebacks in {self.log_path})")
        return reply

    def _stop_command(self, name: str, command_id: int) -> None:
        """The controller is interrupted while the engine runs `name`: ask the engine to stop it
        at its next step boundary (azr.engine.interrupt) and wait for its answer for
        STOP_GRACE_S; then it is idle and shuts down cleanly. Kill it when it does not answer in
        time, has died, or a second interrupt comes."""
        deadline = time.monotonic() + interrupt.STOP_GRACE_S
        try:
            protocol.send_message(self._sock, protocol.command_message(protocol.Stop()))
            while _receive(self._sock, self.process, deadline).get("id") != command_id:
                pass
        except BaseException:  # noqa: BLE001 - no answer, a dead engine or a second interrupt: kill it now
            _kill(self.process, self.ranks, grace=1.0)
            self._failed = f"the engine was killed when the run was interrupted during `{name}`"
            _live.discard(self)

    @property
    def log_path(self) -> Path:
        return engine_dir(self.run_root) / LOG_FILE

    def _fail(self, message: str) -> None:
        _kill(self.process, self.ranks)
        self._failed = message
        _live.discard(self)
        raise EngineError(f"{message}; {log_reason_or_tail(self.log_path)}")


def _number(command: protocol.EngineCommand) -> int:
    """The id the controller gave `command` (every command it sends has one)."""
    if command.id is None:
        raise EngineError(f"`{command.cmd}` was sent without an id")
    return command.id


class _Died(Exception):
    pass


def _receive(sock: socket.socket, process: subprocess.Popen[bytes], deadline: float) -> dict[str, JsonValue]:
    """The next message, watching the launcher: `_Died` as soon as it exits, a timeout at the deadline."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline passed")
        ready, _, _ = select.select([sock], [], [], min(_POLL_S, left))
        if ready:
            try:
                return protocol.recv_message(sock, deadline)
            except protocol.ConnectionClosed:
                try:  # give the launcher a moment to report how its ranks ended
                    process.wait(timeout=max(1.0, min(10.0, deadline - time.monotonic())))
                except subprocess.TimeoutExpired:
                    pass
                raise _Died() from None
        if process.poll() is not None:
            raise _Died()


class _Starting:
    """The launcher while its ranks start: accept rank 0, then read its start-up events."""

    def __init__(self, process: subprocess.Popen, log_path: Path, timeout: float) -> None:
        self.process = process
        self.log_path = log_path
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.ranks: list[dict[str, JsonValue]] = []

    def accept(self, listener: socket.socket, token: str) -> socket.socket:
        while True:
            self._check()
            ready, _, _ = select.select([listener], [], [], _POLL_S)
            if not ready:
                continue
            sock, _ = listener.accept()
            try:
                hello = protocol.recv_message(sock, time.monotonic() + 10)
            except (OSError, EngineError):
                sock.close()
                continue
            if hello.get("event") == "hello" and hmac.compare_digest(str(hello.get("token", "")), token):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock
            sock.close()  # not our engine

    def expect(self, sock: socket.socket, event: str) -> dict[str, JsonValue]:
        try:
            message = _receive(sock, self.process, self.deadline)
        except _Died:
            self._raise(f"the engine exited with code {self.process.returncode} while starting")
        except (socket.timeout, TimeoutError):
            self._raise(f"the engine did not start within {self.timeout:g} s (engine.start_timeout_s)")
        if message.get("event") == "failed":  # the rank's own error says it; the traceback is in the log
            self.kill()
            raise EngineError(f"{message.get('error')} (the engine's log: {self.log_path})")
        if message.get("event") != event:
            self._raise(f"the engine sent {message.get('event')!r} while starting, expected {event!r}")
        return message

    def _check(self) -> None:
        if self.process.poll() is not None:
            self._raise(f"the engine exited with code {self.process.returncode} while starting")
        if time.monotonic() > self.deadline:
            self._raise(f"the engine did not connect within {self.timeout:g} s (engine.start_timeout_s)")

    def _raise(self, message: str) -> None:
        self.kill()
        raise EngineError(f"{message}; {log_reason_or_tail(self.log_path)}")

    def kill(self) -> None:
        _kill(self.process, self.ranks)


def _die_with_parent() -> None:
    """In the launcher before exec: SIGTERM when the controller dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def _kill(process: subprocess.Popen[bytes], ranks: Sequence[Mapping[str, JsonValue]], grace: float = 5.0) -> None:
    """Stop the launcher's group, then every rank it started that is still an engine rank
    (torchrun starts each rank in a session of its own, outside the launcher's group); the
    ranks of other machines belong to their own launchers."""
    if process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.wait(timeout=grace)
    host = socket.gethostname()
    for rank in ranks:
        pid = int(rank.get("pid", 0))
        if rank.get("host") == host and rank.get("machine", 0) == 0 and pid > 0 and _is_engine_rank(pid):
            _signal_group(pid, signal.SIGKILL)
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _is_engine_rank(pid: int) -> bool:
    """Still a rank of an engine (not a reused pid)?"""
    try:
        return SERVICE_MODULE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


_live: set[EngineClient] = set()


def kill_all_engines() -> None:
    """Kill every engine this process started, now (a second interrupt: no grace)."""
    for client in list(_live):
        _kill(client.process, client.ranks, grace=0.5)
        _live.discard(client)


def _close_all() -> None:
    """At interpreter exit: no engine outlives the controller that started it."""
    for client in list(_live):
        try:
            client.close()
        except Exception:  # noqa: BLE001 - exiting anyway
            _kill(client.process, client.ranks)


atexit.register(_close_all)
