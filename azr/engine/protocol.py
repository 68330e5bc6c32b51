"""What the controller and the engine say to each other, and the files they exchange.

Messages are length-prefixed UTF-8 JSON objects on one TCP connection (never pickle: the
controller must not unpickle anything a process it does not control wrote). Bulk data moves
as Parquet files in the run directory; a message only names them. This module imports no
torch, so the controller can use it without loading the model stack.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from azr.pipeline.atomic_io import write_parquet_atomic

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


def send_message(sock: socket.socket, message: dict[str, Any]) -> None:
    data = json.dumps(message, separators=(",", ":")).encode("utf-8")
    if len(data) > MAX_MESSAGE_BYTES:
        raise EngineError(f"a message of {len(data)} bytes is too large: bulk data goes through files")
    sock.sendall(_HEADER.pack(len(data)) + data)


def recv_message(sock: socket.socket, deadline: float | None = None) -> dict[str, Any]:
    """One message; `deadline` (time.monotonic) bounds the wait (socket.timeout when passed)."""
    (length,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size, deadline))
    if length > MAX_MESSAGE_BYTES:
        raise EngineError(f"refusing a message of {length} bytes (limit {MAX_MESSAGE_BYTES})")
    message = json.loads(_recv_exact(sock, length, deadline).decode("utf-8"))
    if not isinstance(message, dict):
        raise EngineError(f"expected a JSON object, got {type(message).__name__}")
    return message


def _recv_exact(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    chunks, remaining = [], size
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


# ------------------------------------------------------------------------------ files


def write_prompts(path: Path, prompts: Sequence[str]) -> None:
    write_parquet_atomic(pa.table({"prompt": list(prompts)}, schema=PROMPTS_SCHEMA), path)


def read_prompts(path: Path) -> list[str]:
    return pq.read_table(path, columns=["prompt"]).column("prompt").to_pylist()


def write_completions(path: Path, completions: Sequence[Sequence[Any]]) -> None:
    """`completions[i]` are the samples of prompt i (azr.engine.rollout.transformers_backend.Completion)."""
    rows = [
        {"prompt_index": index, "sample": sample, "text": c.text, "token_ids": list(c.token_ids),
         "prompt_token_ids": list(c.prompt_token_ids), "finish_reason": c.finish_reason,
         "logprobs": None if c.logprobs is None else list(c.logprobs)}
        for index, samples in enumerate(completions) for sample, c in enumerate(samples)
    ]
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=COMPLETIONS_SCHEMA), path)


def read_completions(path: Path, prompts: int) -> list[list[Any]]:
    """The completions file as `prompts` lists of Completion, in prompt and sample order."""
    from azr.engine.rollout.transformers_backend import Completion

    table = pq.read_table(path).to_pydict()
    result: list[list[Any]] = [[] for _ in range(prompts)]
    order = sorted(range(len(table["prompt_index"])), key=lambda i: (table["prompt_index"][i], table["sample"][i]))
    for i in order:
        result[table["prompt_index"][i]].append(Completion(
            text=table["text"][i], token_ids=tuple(table["token_ids"][i]),
            prompt_token_ids=tuple(table["prompt_token_ids"][i]), finish_reason=table["finish_reason"][i],
            logprobs=None if table.get("logprobs", [None] * (i + 1))[i] is None else tuple(table["logprobs"][i]),
        ))
    return result


def settings_message(settings: Any) -> dict[str, Any]:
    """A SamplingSettings as JSON (a frozen dataclass of plain numbers)."""
    return asdict(settings)


def requests_message(requests: Sequence[Any]) -> list[dict[str, Any]]:
    """The parts of a merged generate call (GenerationRequest): how many consecutive prompts of
    the prompts file each has, and their sampling settings."""
    return [{"prompts": len(r.prompts), "settings": settings_message(r.settings)} for r in requests]


def split_requests(prompts: Sequence[str], parts: Sequence[dict[str, Any]]) -> list[Any]:
    """The GenerationRequests a prompts file and its `requests` message describe."""
    from azr.engine.rollout.transformers_backend import GenerationRequest, SamplingSettings

    sizes = [int(part["prompts"]) for part in parts]
    if sum(sizes) != len(prompts) or any(size < 0 for size in sizes):
        raise EngineError(f"a generate command's requests cover {sum(sizes)} prompts but its file has {len(prompts)}")
    requests, start = [], 0
    for size, part in zip(sizes, parts):
        requests.append(GenerationRequest(tuple(prompts[start:start + size]), SamplingSettings(**part["settings"])))
        start += size
    return requests
