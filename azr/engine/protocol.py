"""What the controller and the engine say to each other, and the files they exchange.

Messages are length-prefixed UTF-8 JSON objects on one TCP connection (never pickle: the
controller must not unpickle anything a process it does not control wrote). Bulk data moves
as Parquet files in the run directory; a message only names them. Every command is one
pydantic model in `COMMANDS` (its `cmd` tag a `Command`), and every successful reply one
`Reply` model, so an unknown or malformed message is an error that says what was wrong. This
module imports no torch, so the controller can use it without loading the model stack.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, JsonValue, NonNegativeInt, TypeAdapter, ValidationError

from azr.engine.api import CheckpointInfo, Completion, GenerationRequest, PromptCompletions, SamplingSettings
from azr.pipeline.atomic_io import write_parquet_atomic

RANK_LEAVES = "(the engine stops: a rank failed)"
"""Ends a rank's failure reply when the rank leaves the engine after it (its peers may be inside a
collective it will never join): the controller then reports the engine as stopped, with that reason."""
TOKEN_ENV = "AZR_ENGINE_TOKEN"  # the per-run secret rank 0 must present; never on a command line
CONTROLLER_ENV = "AZR_ENGINE_CONTROLLER"  # host:port where the controller listens
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")

PROMPTS_SCHEMA = pa.schema([("prompt", pa.string())])
COMPLETIONS_SCHEMA = pa.schema([
    ("prompt_index", pa.int64()),
    ("sample", pa.int64()),
    ("text", pa.string()),
    ("token_ids", pa.list_(pa.int64())),
    ("prompt_token_ids", pa.list_(pa.int64())),
    ("finish_reason", pa.string()),
    ("logprobs", pa.list_(pa.float32())),  # behaviour log-probs of token_ids; null if not recorded
])


class EngineError(RuntimeError):
    """The engine failed, died, or did not answer in time; the message says what and where its log is."""


class ConnectionClosed(EngineError):
    """The other side closed the connection."""


def send_message(sock: socket.socket, message: dict[str, JsonValue]) -> None:
    data = json.dumps(message, separators=(",", ":")).encode("utf-8")
    if len(data) > MAX_MESSAGE_BYTES:
        raise EngineError(f"a message of {len(data)} bytes is too large: bulk data goes through files")
    sock.sendall(_HEADER.pack(len(data)) + data)


def recv_message(sock: socket.socket, deadline: float | None = None) -> dict[str, JsonValue]:
    """One message; `deadline` (time.monotonic) bounds the wait (socket.timeout when passed)."""
    (length,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size, deadline))
    if length > MAX_MESSAGE_BYTES:
        raise EngineError(f"refusing a message of {length} bytes (limit {MAX_MESSAGE_BYTES})")
    message = json.loads(_recv_exact(sock, length, deadline).decode("utf-8"))
    if not isinstance(message, dict):
        raise EngineError(f"expected a JSON object, got {type(message).__name__}")
    return message


def _recv_exact(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("deadline passed")
            sock.settimeout(left)
        else:
            sock.settimeout(None)
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            raise ConnectionClosed("the connection was closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


# ------------------------------------------------------------------------------ commands


class Command(StrEnum):
    """Every command the engine takes; the `cmd` field of its message."""

    PING = "ping"
    GENERATE = "generate"
    UPDATE = "update"
    SYNC_ROLLOUT_WEIGHTS = "sync_rollout_weights"
    SAVE_CHECKPOINT = "save_checkpoint"
    LOAD_CHECKPOINT = "load_checkpoint"
    RESUME = "resume"
    EXPORT_WEIGHTS = "export_weights"
    SHUTDOWN = "shutdown"
    STOP = "stop"  # end the running command at its next step boundary (azr.engine.interrupt)
    KEEPALIVE = "keepalive"  # rank 0 to the other ranks only, while the controller is quiet


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Command(_Message):
    id: int | None = None  # the controller numbers its commands; a reply carries the number back


class Ping(_Command):
    cmd: Literal[Command.PING] = Command.PING


class RequestPart(_Message):
    """One GenerationRequest of a merged call: its share of the prompts file, in order."""

    prompts: NonNegativeInt
    settings: SamplingSettings


class Generate(_Command):
    """Sample the prompts file's prompts; `requests` split it into parts with their own
    settings. Rank 0 writes the completions file."""

    cmd: Literal[Command.GENERATE] = Command.GENERATE
    prompts: Path
    completions: Path
    requests: list[RequestPart]


class Update(_Command):
    cmd: Literal[Command.UPDATE] = Command.UPDATE
    scored: Path


class SyncRolloutWeights(_Command):
    cmd: Literal[Command.SYNC_ROLLOUT_WEIGHTS] = Command.SYNC_ROLLOUT_WEIGHTS


class SaveCheckpoint(_Command):
    cmd: Literal[Command.SAVE_CHECKPOINT] = Command.SAVE_CHECKPOINT
    root: Path
    step: NonNegativeInt
    metadata: dict[str, JsonValue] = Field(default_factory=dict)


class LoadCheckpoint(_Command):
    cmd: Literal[Command.LOAD_CHECKPOINT] = Command.LOAD_CHECKPOINT
    path: Path


class Resume(_Command):
    cmd: Literal[Command.RESUME] = Command.RESUME
    root: Path


class ExportWeights(_Command):
    cmd: Literal[Command.EXPORT_WEIGHTS] = Command.EXPORT_WEIGHTS
    out_dir: Path


class Shutdown(_Command):
    cmd: Literal[Command.SHUTDOWN] = Command.SHUTDOWN
    reason: str = "asked by the controller"


class Stop(_Command):
    """Read by rank 0 while a command runs; one that arrives after its command ended is ignored."""

    cmd: Literal[Command.STOP] = Command.STOP


class Keepalive(_Command):
    cmd: Literal[Command.KEEPALIVE] = Command.KEEPALIVE


EngineCommand = Annotated[
    Ping | Generate | Update | SyncRolloutWeights | SaveCheckpoint | LoadCheckpoint | Resume | ExportWeights
    | Shutdown | Stop | Keepalive,
    Field(discriminator="cmd"),
]
_COMMANDS: TypeAdapter[EngineCommand] = TypeAdapter(EngineCommand)


def parse_command(message: dict[str, JsonValue]) -> EngineCommand:
    """The typed command of a message; an EngineError that says what is wrong with it."""
    name = message.get("cmd")
    if name not in {c.value for c in Command}:
        known = ", ".join(c.value for c in Command)
        raise EngineError(f"unknown engine command {name!r} (known: {known})")
    try:
        return _COMMANDS.validate_python(message)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'message'}: {e['msg']}" for e in exc.errors())
        raise EngineError(f"malformed `{name}` command: {problems}") from None


def command_message(command: EngineCommand) -> dict[str, JsonValue]:
    """A command as the JSON object `send_message` writes."""
    return command.model_dump(mode="json")


# ------------------------------------------------------------------------------ replies


class Reply(_Message):
    """A successful command's answer; subclasses add what the command returns."""

    id: int
    ok: Literal[True] = True
    elapsed_s: float = 0.0


class Failure(_Message):
    """Every rank's error of a failed command, one per failing rank."""

    id: int
    ok: Literal[False] = False
    error: str


class PingReply(Reply):
    world_size: int
    strategy: str
    weights_version: int


class GenerateReply(Reply):
    prompts: int  # how many prompts were answered


class UpdateReply(Reply):
    metrics: dict[str, JsonValue]  # update.json's record


class SyncReply(Reply):
    seconds: float | None  # None: the rollout engine already held the weights


class PathReply(Reply):
    path: Path  # the checkpoint written, or the exported directory


class CheckpointRecord(_Message):
    path: Path
    step: int
    metadata: dict[str, JsonValue] = Field(default_factory=dict)

    @classmethod
    def of(cls, info: CheckpointInfo | None) -> CheckpointRecord | None:
        return None if info is None else cls(path=info.path, step=info.step, metadata=dict(info.metadata))

    def info(self) -> CheckpointInfo:
        return CheckpointInfo(self.path, self.step, dict(self.metadata))


class CheckpointReply(Reply):
    info: CheckpointRecord | None  # None: no complete checkpoint to resume from


# ------------------------------------------------------------------------------ files


def write_prompts(path: Path, prompts: Sequence[str]) -> None:
    write_parquet_atomic(pa.table({"prompt": list(prompts)}, schema=PROMPTS_SCHEMA), path)


def read_prompts(path: Path) -> list[str]:
    return [str(p) for p in pq.read_table(path, columns=["prompt"]).column("prompt").to_pylist()]


def write_completions(path: Path, completions: Sequence[Sequence[Completion]]) -> None:
    """`completions[i]` are the samples of prompt i."""
    rows = [
        {"prompt_index": index, "sample": sample, "text": c.text, "token_ids": list(c.token_ids),
         "prompt_token_ids": list(c.prompt_token_ids), "finish_reason": c.finish_reason,
         "logprobs": None if c.logprobs is None else list(c.logprobs)}
        for index, samples in enumerate(completions) for sample, c in enumerate(samples)
    ]
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=COMPLETIONS_SCHEMA), path)


def read_completions(path: Path, prompts: int) -> PromptCompletions:
    """The completions file as `prompts` lists of Completion, in prompt and sample order."""
    table = pq.read_table(path).to_pydict()
    result: PromptCompletions = [[] for _ in range(prompts)]
    order = sorted(range(len(table["prompt_index"])), key=lambda i: (table["prompt_index"][i], table["sample"][i]))
    for i in order:
        result[table["prompt_index"][i]].append(Completion(
            text=table["text"][i], token_ids=tuple(table["token_ids"][i]),
            prompt_token_ids=tuple(table["prompt_token_ids"][i]), finish_reason=table["finish_reason"][i],
            logprobs=None if table.get("logprobs", [None] * (i + 1))[i] is None else tuple(table["logprobs"][i]),
        ))
    return result


def request_parts(requests: Sequence[GenerationRequest]) -> list[RequestPart]:
    """The parts of a merged generate call: how many consecutive prompts of the prompts file
    each request has, and its sampling settings."""
    return [RequestPart(prompts=len(r.prompts), settings=r.settings) for r in requests]


def split_requests(prompts: Sequence[str], parts: Sequence[RequestPart]) -> list[GenerationRequest]:
    """The GenerationRequests a prompts file and its `requests` parts describe."""
    sizes = [part.prompts for part in parts]
    if sum(sizes) != len(prompts):
        raise EngineError(f"a generate command's requests cover {sum(sizes)} prompts but its file has {len(prompts)}")
    requests, start = [], 0
    for part in parts:
        requests.append(GenerationRequest(tuple(prompts[start:start + part.prompts]), part.settings))
        start += part.prompts
    return requests
