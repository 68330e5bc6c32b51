"""Stopping the engine's current command at its next step boundary, when the run is interrupted.

The controller (Ctrl-C, SIGTERM from `kill`, Kubernetes or a Prefect cancellation) sends a
`stop` message while a command runs. Rank 0 reads the connection during every command on a
small thread (`watch`), which sets a flag; generation checks it after every token and the
update before every micro-batch (`stop_point`) and raises `CommandStopped`, which the rank
answers as the command's failure. Nothing is written half: a stopped update has not stepped
the optimizer and writes no update record, a stopped generation writes no completions file
(every file is written atomically anyway). The controller kills whatever has not answered
after its grace period.

No torch here: the controller imports the message names too.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
from collections.abc import Iterator

STOP_COMMAND = "stop"
STOP_GRACE_S = 5.0  # the engine's time to answer a stop before it is killed: a layer's work (stop_hooks), or a
# checkpoint's state write or vLLM, which cannot stop inside; killing it is safe (every file is atomic)

_requested = threading.Event()


class CommandStopped(RuntimeError):
    """The controller asked the engine to stop the command in progress."""


class RunInterrupted(KeyboardInterrupt):
    """The run was interrupted (a signal) while the engine ran a command; the command was
    stopped or the engine killed, and what was done is kept for `--resume`."""


def requested() -> bool:
    return _requested.is_set()


def stop_point(where: str) -> None:
    """A step boundary: raise CommandStopped when a stop was asked for."""
    if _requested.is_set():
        raise CommandStopped(f"stopped at the controller's request ({where})")


@contextlib.contextmanager
def watch(sock: socket.socket | None) -> Iterator[None]:
    """While a command runs on rank 0, read the controller's connection for a `stop` (a
    closed connection means the same: nobody waits for the answer)."""
    _requested.clear()
    if sock is None:
        yield
        return
    done = threading.Event()
    wake_read, wake_write = os.pipe()  # ends the reader's wait the moment the command is done

    def read() -> None:
        from azr.engine import protocol

        while not done.is_set():
            ready, _, _ = select.select([sock, wake_read], [], [])
            if sock not in ready or done.is_set():
                continue
            try:
                message = protocol.recv_message(sock)
            except (OSError, protocol.EngineError):
                _requested.set()
                return
            if message.get("cmd") == STOP_COMMAND:
                _requested.set()
                return

    reader = threading.Thread(target=read, name="azr-stop-watch", daemon=True)
    reader.start()
    try:
        yield
    finally:
        done.set()
        os.write(wake_write, b"x")
        reader.join()
        os.close(wake_read)
        os.close(wake_write)
        _requested.clear()  # a stop concerns the command it came during, never a later one
